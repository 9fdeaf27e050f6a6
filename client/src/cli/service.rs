//! `service install|uninstall|status`: run `atlasbridged` under the platform's service manager
//! (a systemd user unit on Linux, a launchd agent on macOS), started at login and restarted when
//! it fails.
//!
//! Every action is first a [`Plan`] — files to write or remove and commands to run — so that
//! `--dry-run` prints exactly what would happen and tests can check it without a service manager.

mod system;
mod units;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use atlasbridge_protocol::paths::{self, ProcessEnvironment};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::{CliError, Context};

/// The service definition of the daemon.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the unit (systemd) or agent (launchd) with this installation's paths, enable it and
    /// start it.
    Install(ServiceArgs),
    /// Stop and disable the service and remove its file (the data directory stays).
    Uninstall(ServiceArgs),
    /// Whether the service is installed, enabled and running.
    Status {
        /// The system-wide service (`install --system`) instead of this user's.
        #[arg(long)]
        system: bool,
    },
}

/// Options of `install` and `uninstall`.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Print the files and the commands instead of writing and running them.
    #[arg(long)]
    pub dry_run: bool,
    /// The system-wide setup of the threat model (Linux, as root): the daemon under its own
    /// `atlasbridge` account, agents reaching it only through the socket, with roles.
    #[arg(long)]
    pub system: bool,
    /// With --system: the group whose members may open the socket.
    #[arg(
        long,
        value_name = "GROUP",
        default_value = "atlasbridge-agents",
        requires = "system"
    )]
    pub socket_group: String,
    /// With --system: an agent's account and its role (viewer, operator, admin; default
    /// operator). It joins the socket group. Repeat for each agent.
    #[arg(long, value_name = "USER[=ROLE]", requires = "system")]
    pub agent: Vec<String>,
    /// With --system: the root of the system to install into (an image being built); the
    /// service is enabled there, not started.
    #[arg(long, value_name = "DIR", requires = "system")]
    pub root: Option<PathBuf>,
    /// The daemon binary to run [default: atlasbridged next to this atlasbridge, else
    /// $ATLASBRIDGE_DAEMON_BIN].
    #[arg(long, value_name = "PATH")]
    pub daemon: Option<PathBuf>,
    /// Install and enable, but do not start the service now (it starts at the next login).
    #[arg(long)]
    pub no_start: bool,
}

/// A file the plan writes.
#[derive(Debug, Serialize)]
struct PlannedFile {
    path: PathBuf,
    #[serde(serialize_with = "octal")]
    mode: u32,
    content: String,
}

/// A directory the plan creates (with its parents) when it is missing.
#[derive(Debug, Serialize)]
struct PlannedDirectory {
    path: PathBuf,
    #[serde(serialize_with = "octal")]
    mode: u32,
}

fn octal<S: serde::Serializer>(mode: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{mode:04o}"))
}

/// What an install or uninstall does, in order: directories, files, removals, commands.
#[derive(Debug, Default, Serialize)]
struct Plan {
    directories: Vec<PlannedDirectory>,
    files: Vec<PlannedFile>,
    remove: Vec<PathBuf>,
    commands: Vec<Vec<String>>,
    /// Commands whose failure is expected and harmless (stopping what is not running).
    #[serde(skip)]
    tolerated: Vec<usize>,
    notes: Vec<String>,
}

impl Plan {
    fn directory(&mut self, path: &Path, mode: u32) {
        self.directories.push(PlannedDirectory {
            path: path.to_path_buf(),
            mode,
        });
    }

    fn file(&mut self, path: PathBuf, mode: u32, content: String) {
        self.files.push(PlannedFile {
            path,
            mode,
            content,
        });
    }

    fn command(&mut self, words: &[&str]) {
        self.commands
            .push(words.iter().map(|w| (*w).to_owned()).collect());
    }

    fn tolerated_command(&mut self, words: &[&str]) {
        self.tolerated.push(self.commands.len());
        self.command(words);
    }
}

/// Where this user's service lives and what it runs.
#[derive(Debug, Clone)]
struct Installation {
    home: PathBuf,
    daemon: PathBuf,
    data_dir: PathBuf,
    /// `$XDG_CONFIG_HOME`, when set.
    config_home: Option<PathBuf>,
    uid: u32,
}

pub(super) fn run(ctx: &Context, command: &ServiceCommand) -> Result<ExitCode, CliError> {
    match command {
        ServiceCommand::Install(args) if args.system => {
            let plan = system::install_plan(&system_installation(args)?, !args.no_start)?;
            carry_out(ctx, &plan, args.dry_run)
        }
        ServiceCommand::Uninstall(args) if args.system => {
            let plan = system::uninstall_plan(&system_installation(args)?)?;
            carry_out(ctx, &plan, args.dry_run)
        }
        ServiceCommand::Install(args) => {
            let installation = installation(args)?;
            let plan = install_plan(&installation, !args.no_start)?;
            carry_out(ctx, &plan, args.dry_run)
        }
        ServiceCommand::Uninstall(args) => {
            let installation = installation(args)?;
            let plan = uninstall_plan(&installation)?;
            carry_out(ctx, &plan, args.dry_run)
        }
        ServiceCommand::Status { system } => status(ctx, *system),
    }
}

fn system_installation(args: &ServiceArgs) -> Result<system::SystemInstallation, CliError> {
    if !cfg!(target_os = "linux") {
        return Err(CliError::Failed(format!(
            "--system is for Linux with systemd; on {} use the user service",
            std::env::consts::OS
        )));
    }
    let agents = args
        .agent
        .iter()
        .map(|agent| system::parse_agent(agent))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::Failed)?;
    if args.socket_group.is_empty() || args.socket_group.contains([':', '\n', ' ']) {
        return Err(CliError::Failed(format!(
            "--socket-group {:?}: not a group name",
            args.socket_group
        )));
    }
    Ok(system::SystemInstallation {
        daemon: daemon_path(args)?,
        socket_group: args.socket_group.clone(),
        agents,
        root: args
            .root
            .as_ref()
            .map(std::path::absolute)
            .transpose()
            .map_err(|e| CliError::Failed(format!("--root: {e}")))?,
        dry_run: args.dry_run,
    })
}

/// `--daemon`, else the `atlasbridged` next to this binary: absolute, an existing file.
fn daemon_path(args: &ServiceArgs) -> Result<PathBuf, CliError> {
    let daemon = match &args.daemon {
        Some(path) => std::path::absolute(path)
            .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?,
        None => super::daemon::daemon_binary(),
    };
    if !daemon.is_absolute() || !daemon.is_file() {
        return Err(CliError::Failed(format!(
            "cannot find the daemon binary ({}): install it next to atlasbridge or name it with \
             --daemon PATH",
            daemon.display()
        )));
    }
    Ok(daemon.canonicalize().unwrap_or(daemon))
}

fn installation(args: &ServiceArgs) -> Result<Installation, CliError> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| CliError::Failed("HOME is not set".to_owned()))?;
    let daemon = daemon_path(args)?;
    let data_dir =
        paths::data_dir(None, &ProcessEnvironment).map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(Installation {
        home,
        daemon,
        data_dir,
        config_home: std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute()),
        uid: current_uid(),
    })
}

#[cfg(unix)]
fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

fn systemd_unit_path(installation: &Installation) -> PathBuf {
    installation
        .config_home
        .clone()
        .unwrap_or_else(|| installation.home.join(".config"))
        .join("systemd/user")
        .join(units::SYSTEMD_UNIT_NAME)
}

fn launchd_plist_path(installation: &Installation) -> PathBuf {
    installation
        .home
        .join("Library/LaunchAgents")
        .join(format!("{}.plist", units::LAUNCHD_LABEL))
}

fn install_plan(installation: &Installation, start: bool) -> Result<Plan, CliError> {
    if cfg!(target_os = "macos") {
        Ok(launchd_install_plan(installation, start))
    } else if cfg!(target_os = "linux") {
        systemd_install_plan(installation, start)
    } else {
        Err(unsupported())
    }
}

fn uninstall_plan(installation: &Installation) -> Result<Plan, CliError> {
    if cfg!(target_os = "macos") {
        Ok(launchd_uninstall_plan(installation))
    } else if cfg!(target_os = "linux") {
        Ok(systemd_uninstall_plan(installation))
    } else {
        Err(unsupported())
    }
}

fn unsupported() -> CliError {
    CliError::Failed(format!(
        "no service manager support on {}: run `atlasbridge daemon start` at login instead",
        std::env::consts::OS
    ))
}

fn systemd_install_plan(installation: &Installation, start: bool) -> Result<Plan, CliError> {
    let invalid = |e: String| CliError::Failed(format!("cannot write a systemd unit: {e}"));
    let unit = units::systemd_user_unit(
        &units::systemd_path(&installation.daemon).map_err(invalid)?,
        &units::systemd_path(&installation.data_dir).map_err(invalid)?,
    );
    let path = systemd_unit_path(installation);
    let mut plan = Plan::default();
    plan.directory(&installation.data_dir, 0o700);
    if let Some(parent) = path.parent() {
        plan.directory(parent, 0o700);
    }
    plan.file(path.clone(), 0o644, unit);
    plan.command(&["systemctl", "--user", "daemon-reload"]);
    if start {
        plan.command(&[
            "systemctl",
            "--user",
            "enable",
            "--now",
            units::SYSTEMD_UNIT_NAME,
        ]);
    } else {
        plan.command(&["systemctl", "--user", "enable", units::SYSTEMD_UNIT_NAME]);
    }
    plan.notes = vec![
        format!(
            "wrote {}: atlasbridged ({}) starts at login, restarts on failure, and runs \
             sandboxed with only {} writable",
            path.display(),
            installation.daemon.display(),
            installation.data_dir.display()
        ),
        "logs: journalctl --user -u atlasbridged".to_owned(),
        "to start it at boot without a login: loginctl enable-linger".to_owned(),
        "after upgrading the binaries: systemctl --user restart atlasbridged".to_owned(),
    ];
    Ok(plan)
}

fn systemd_uninstall_plan(installation: &Installation) -> Plan {
    let path = systemd_unit_path(installation);
    let mut plan = Plan::default();
    plan.tolerated_command(&[
        "systemctl",
        "--user",
        "disable",
        "--now",
        units::SYSTEMD_UNIT_NAME,
    ]);
    plan.remove.push(path.clone());
    plan.command(&["systemctl", "--user", "daemon-reload"]);
    plan.notes = vec![
        format!("removed {}", path.display()),
        format!(
            "the data directory {} is kept (the trace and keys); delete it yourself if you \
             mean to",
            installation.data_dir.display()
        ),
    ];
    plan
}

fn launchd_install_plan(installation: &Installation, start: bool) -> Plan {
    let log_dir = installation.home.join("Library/Logs/atlasbridge");
    let log_file = log_dir.join("atlasbridged.log");
    let path = launchd_plist_path(installation);
    let domain = format!("gui/{}", installation.uid);
    let service = format!("{domain}/{}", units::LAUNCHD_LABEL);
    let mut plan = Plan::default();
    plan.directory(&log_dir, 0o700);
    if let Some(parent) = path.parent() {
        plan.directory(parent, 0o700);
    }
    plan.file(
        path.clone(),
        0o644,
        units::launchd_agent(
            &installation.daemon.to_string_lossy(),
            &log_file.to_string_lossy(),
        ),
    );
    // A previous version of the agent must go before the new one can be bootstrapped.
    plan.tolerated_command(&["launchctl", "bootout", &service]);
    plan.command(&["launchctl", "enable", &service]);
    // Bootstrapping loads the agent, and RunAtLoad starts it; without it, the next login does.
    if start {
        plan.command(&["launchctl", "bootstrap", &domain, &path.to_string_lossy()]);
    }
    plan.notes = vec![
        format!(
            "wrote {}: atlasbridged ({}) starts at login and restarts after a failure",
            path.display(),
            installation.daemon.display()
        ),
        format!("logs: {}", log_file.display()),
        format!("after upgrading the binaries: launchctl kickstart -k {service}"),
    ];
    plan
}

fn launchd_uninstall_plan(installation: &Installation) -> Plan {
    let path = launchd_plist_path(installation);
    let service = format!("gui/{}/{}", installation.uid, units::LAUNCHD_LABEL);
    let mut plan = Plan::default();
    plan.tolerated_command(&["launchctl", "bootout", &service]);
    plan.remove.push(path.clone());
    plan.notes = vec![
        format!("removed {}", path.display()),
        format!(
            "the data directory {} is kept (the trace and keys)",
            installation.data_dir.display()
        ),
    ];
    plan
}

/// Prints the plan (`--dry-run`) or carries it out, stopping at the first failure.
fn carry_out(ctx: &Context, plan: &Plan, dry_run: bool) -> Result<ExitCode, CliError> {
    let commands: Vec<(usize, &Vec<String>)> = plan.commands.iter().enumerate().collect();
    if dry_run {
        if ctx.out.is_json() {
            ctx.out.json(&serde_json::json!({
                "dry_run": true,
                "directories": plan.directories,
                "files": plan.files,
                "remove": plan.remove,
                "commands": commands.iter().map(|(_, c)| c).collect::<Vec<_>>(),
            }));
        } else {
            for dir in &plan.directories {
                println!("# mkdir -p -m {:04o} {}", dir.mode, dir.path.display());
            }
            for file in &plan.files {
                println!("# write {} (mode {:04o}):", file.path.display(), file.mode);
                print!("{}", file.content);
            }
            for path in &plan.remove {
                println!("# rm {}", path.display());
            }
            for (_, words) in &commands {
                println!("{}", words.join(" "));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    for dir in &plan.directories {
        create_dir(&dir.path, dir.mode)?;
    }
    for file in &plan.files {
        write_file(&file.path, &file.content, file.mode)?;
    }
    for path in &plan.remove {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CliError::Failed(format!(
                    "cannot remove {}: {e}",
                    path.display()
                )));
            }
        }
    }
    for (index, words) in &commands {
        if let Err(e) = run_command(words)
            && !plan.tolerated.contains(index)
        {
            return Err(CliError::Failed(e));
        }
    }
    if ctx.out.is_json() {
        ctx.out.json(&serde_json::json!({
            "dry_run": false,
            "files": plan.files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            "removed": plan.remove,
            "commands": commands.iter().map(|(_, c)| c).collect::<Vec<_>>(),
            "notes": plan.notes,
        }));
    } else {
        for note in &plan.notes {
            println!("{note}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), CliError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, mode);
    #[cfg(not(unix))]
    let _ = mode;
    builder
        .create(dir)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))
}

/// Writes through a temporary file and a rename, so a half-written unit is never loaded.
fn write_file(path: &Path, content: &str, mode: u32) -> Result<(), CliError> {
    let failed =
        |e: std::io::Error| CliError::Failed(format!("cannot write {}: {e}", path.display()));
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, content).map_err(failed)?;
    #[cfg(unix)]
    std::fs::set_permissions(
        &temporary,
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )
    .map_err(failed)?;
    #[cfg(not(unix))]
    let _ = mode;
    std::fs::rename(&temporary, path).map_err(failed)
}

fn run_command(words: &[String]) -> Result<(), String> {
    let (program, arguments) = words
        .split_first()
        .ok_or_else(|| "empty command".to_owned())?;
    let output = Command::new(program)
        .args(arguments)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            words.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Installed, enabled, running — from the service manager, and whether the socket answers.
fn status(ctx: &Context, system: bool) -> Result<ExitCode, CliError> {
    let args = ServiceArgs {
        dry_run: true,
        system: false,
        socket_group: String::new(),
        agent: Vec::new(),
        root: None,
        daemon: None,
        no_start: false,
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let installation = installation(&args).unwrap_or_else(|_| Installation {
        home,
        daemon: super::daemon::daemon_binary(),
        data_dir: PathBuf::new(),
        config_home: std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
        uid: current_uid(),
    });
    let systemctl = |what: &str| {
        let mut words = vec!["systemctl"];
        if !system {
            words.push("--user");
        }
        words.extend([what, units::SYSTEMD_UNIT_NAME]);
        query(&words)
    };
    let (file, manager) = if system {
        (
            PathBuf::from("/etc/systemd/system").join(units::SYSTEMD_UNIT_NAME),
            systemctl("is-enabled")
                .and_then(|enabled| systemctl("is-active").map(|a| format!("{enabled}, {a}"))),
        )
    } else if cfg!(target_os = "macos") {
        let service = format!("gui/{}/{}", installation.uid, units::LAUNCHD_LABEL);
        (
            launchd_plist_path(&installation),
            query(&["launchctl", "print", &service]).map(|out| {
                out.lines()
                    .find(|l| l.trim_start().starts_with("state ="))
                    .map_or_else(|| "loaded".to_owned(), |l| l.trim().to_owned())
            }),
        )
    } else {
        (
            systemd_unit_path(&installation),
            query(&[
                "systemctl",
                "--user",
                "is-enabled",
                units::SYSTEMD_UNIT_NAME,
            ])
            .and_then(|enabled| {
                query(&["systemctl", "--user", "is-active", units::SYSTEMD_UNIT_NAME])
                    .map(|active| format!("{enabled}, {active}"))
            }),
        )
    };
    let installed = file.is_file();
    // The system service's socket, unless the user named one.
    let socket =
        if system && ctx.socket_flag.is_none() && std::env::var_os(paths::SOCKET_ENV).is_none() {
            PathBuf::from(units::SYSTEM_SOCKET)
        } else {
            ctx.socket.clone()
        };
    let answering = crate::blocking::Client::connect(&socket)
        .and_then(|mut c| c.status())
        .is_ok();
    if ctx.out.is_json() {
        ctx.out.json(&serde_json::json!({
            "installed": installed,
            "file": file,
            "manager": manager.as_ref().ok(),
            "manager_error": manager.as_ref().err(),
            "answering": answering,
            "socket": socket,
        }));
    } else {
        super::output::print_fields(&[
            (
                "service file",
                if installed {
                    file.display().to_string()
                } else {
                    format!("not installed ({} absent)", file.display())
                },
            ),
            (
                "service manager",
                match &manager {
                    Ok(state) => state.clone(),
                    Err(e) => format!("unknown ({e})"),
                },
            ),
            (
                "daemon",
                if answering {
                    format!("answering on {}", socket.display())
                } else {
                    format!("not answering on {}", socket.display())
                },
            ),
        ]);
    }
    Ok(ExitCode::SUCCESS)
}

/// A query's answer on stdout (`is-active` answers `inactive` with a failure status, which is
/// still an answer), or what went wrong.
fn query(words: &[&str]) -> Result<String, String> {
    let (program, arguments) = words
        .split_first()
        .ok_or_else(|| "empty command".to_owned())?;
    let output = Command::new(program)
        .args(arguments)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !stdout.is_empty() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    Err(if stderr.is_empty() {
        format!("{} exited with {}", words.join(" "), output.status)
    } else {
        stderr
    })
}
