//! The verdicts of `atlasbridge doctor`, as pure functions: each takes what was found on disk or
//! asked of the daemon and returns one [`Check`], so that every verdict is testable without a
//! daemon, a data directory or a particular user. Finding the facts is `doctor.rs`'s job.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use atlasbridge_protocol::methods::{ChainStatus, CloudStatusResult, DaemonStatus, PolicyStatus};
use atlasbridge_protocol::policy::PolicyError;
use atlasbridge_protocol::trace::ChainHead;
use atlasbridge_protocol::trace::verify::ChainKind;
use serde::Serialize;

use super::chain::ChainFiles;
use super::config::{CloudSection, ConfigFile, ConfigProblem};
use crate::cli::output::duration;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) status: Status,
    pub(crate) detail: String,
    /// The command that fixes it (or, where no command can, one sentence); `None` when ok.
    pub(crate) fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The commands the fixes name, with `--socket` repeated when the user gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Commands {
    /// `atlasbridge` or `atlasbridge --socket PATH`.
    pub(crate) cli: String,
    /// Whether the daemon answers (then repairs and reloads need no start first).
    pub(crate) running: bool,
}

impl Commands {
    pub(crate) fn start(&self) -> String {
        format!("{} daemon start", self.cli)
    }

    pub(crate) fn restart(&self) -> String {
        format!("{} daemon stop && {} daemon start", self.cli, self.cli)
    }

    /// `sub…`, after starting the daemon when it is not running.
    fn with_daemon(&self, sub: &str) -> String {
        if self.running {
            format!("{} {sub}", self.cli)
        } else {
            format!("{} && {} {sub}", self.start(), self.cli)
        }
    }
}

/// Quotes `path` for a POSIX shell when it needs it.
pub(crate) fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

// ----- binaries -------------------------------------------------------------------------------

/// Where the daemon binary was found: the order of `atlasbridge daemon start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinarySource {
    Env,
    NextToCli,
    Path,
}

impl BinarySource {
    fn describe(self) -> &'static str {
        match self {
            Self::Env => "from ATLASBRIDGE_DAEMON_BIN",
            Self::NextToCli => "next to atlasbridge",
            Self::Path => "on PATH",
        }
    }
}

/// The daemon binary `daemon start` would run, and what its `--version` printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DaemonBinary {
    pub(crate) path: PathBuf,
    pub(crate) source: BinarySource,
    pub(crate) version: Result<String, String>,
}

/// `atlasbridged` is there and is the CLI's version.
pub(crate) fn binaries(cli_version: &str, found: Option<&DaemonBinary>, running: bool) -> Check {
    const NAME: &str = "binaries";
    let install = "install atlasbridged next to atlasbridge, or export \
                   ATLASBRIDGE_DAEMON_BIN=/path/to/atlasbridged";
    let Some(binary) = found else {
        let detail = "no atlasbridged in ATLASBRIDGE_DAEMON_BIN, next to atlasbridge or on PATH";
        return if running {
            Check::warn(
                NAME,
                format!("{detail}: `daemon start` could not start the daemon that runs now"),
                install,
            )
        } else {
            Check::fail(NAME, detail, install)
        };
    };
    let at = format!("{} ({})", binary.path.display(), binary.source.describe());
    let printed = match &binary.version {
        Ok(printed) => printed.trim(),
        Err(why) => {
            return Check::fail(
                NAME,
                format!("{at}: cannot run `--version`: {why}"),
                install,
            );
        }
    };
    let mut words = printed.split_whitespace();
    let (Some("atlasbridged"), Some(version)) = (words.next(), words.next()) else {
        return Check::fail(
            NAME,
            format!("{at} is not atlasbridged: `--version` printed {printed:?}"),
            install,
        );
    };
    if version != cli_version {
        return Check::fail(
            NAME,
            format!("atlasbridged {version} at {at}, but atlasbridge is {cli_version}"),
            "install atlasbridge and atlasbridged from the same release",
        );
    }
    Check::ok(
        NAME,
        format!("atlasbridged {version} at {at}, the same version as atlasbridge"),
    )
}

// ----- socket ---------------------------------------------------------------------------------

/// What sits at the socket path when nothing answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leftover {
    Nothing,
    /// A socket file nobody listens on: a daemon that did not stop cleanly.
    StaleSocket,
    /// A file that is not a socket: the daemon refuses to remove it.
    NotASocket,
}

/// What asking the daemon gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DaemonProbe {
    Running(Box<DaemonStatus>),
    NotRunning(Leftover),
    Unreachable(String),
}

impl DaemonProbe {
    pub(crate) fn status(&self) -> Option<&DaemonStatus> {
        match self {
            Self::Running(status) => Some(status),
            _ => None,
        }
    }
}

/// The longest socket path `sun_path` holds (without its NUL).
pub(crate) const MAX_SOCKET_PATH: usize = if cfg!(target_os = "linux") { 107 } else { 103 };

/// The daemon answers on the resolved socket, and is the CLI's version. `log` is the daemon's
/// log file, named when the daemon does not answer.
pub(crate) fn socket(
    socket: &Path,
    probe: &DaemonProbe,
    cli_version: &str,
    log: &Path,
    commands: &Commands,
) -> Check {
    const NAME: &str = "socket";
    let shown = socket.display();
    match probe {
        DaemonProbe::Running(status) => {
            let running = format!(
                "{shown}: atlasbridged {} running (pid {}, up {})",
                status.version,
                status.pid,
                duration(status.uptime_s)
            );
            if status.version != cli_version {
                Check::warn(
                    NAME,
                    format!("{running}, but atlasbridge is {cli_version}"),
                    commands.restart(),
                )
            } else {
                Check::ok(NAME, running)
            }
        }
        DaemonProbe::Unreachable(why) => Check::fail(
            NAME,
            format!("{shown}: the daemon does not answer: {why}"),
            format!(
                "read the daemon's log ({}), then {}",
                log.display(),
                commands.restart()
            ),
        ),
        DaemonProbe::NotRunning(leftover) => {
            let len = socket.as_os_str().len();
            if cfg!(unix) && len > MAX_SOCKET_PATH {
                return Check::fail(
                    NAME,
                    format!(
                        "{shown} is {len} bytes long; a socket path holds at most \
                         {MAX_SOCKET_PATH}: the daemon cannot listen on it"
                    ),
                    "choose a shorter path with --socket or ATLASBRIDGE_SOCKET",
                );
            }
            match leftover {
                Leftover::Nothing => Check::warn(
                    NAME,
                    format!("{shown}: atlasbridged is not running"),
                    commands.start(),
                ),
                Leftover::StaleSocket => Check::warn(
                    NAME,
                    format!(
                        "{shown}: atlasbridged is not running; a stale socket is left by a \
                         daemon that did not stop cleanly (the next start replaces it)"
                    ),
                    commands.start(),
                ),
                Leftover::NotASocket => Check::fail(
                    NAME,
                    format!(
                        "{shown} exists and is not a socket: the daemon refuses to start on it"
                    ),
                    format!(
                        "move it away (mv {} {}.orig), then {}",
                        shell_quote(socket),
                        shell_quote(socket),
                        commands.start()
                    ),
                ),
            }
        }
    }
}

// ----- permissions ----------------------------------------------------------------------------

/// What kind of file a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Dir,
    File,
    Socket,
    Symlink,
    Other,
}

/// The facts of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Permission bits (`mode & 0o7777`).
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) kind: FileKind,
}

/// Why a path must be private.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The socket's directory: 0700, ours, a real directory (the daemon refuses a symlink, a
    /// foreign owner and any group/other write bit).
    SocketDir,
    /// The socket: 0600.
    Socket,
    /// The data directory and `keys/`: 0700.
    PrivateDir,
    /// A key file: 0600.
    Secret,
}

impl Role {
    fn describe(self) -> &'static str {
        match self {
            Self::SocketDir => "socket directory",
            Self::Socket => "socket",
            Self::PrivateDir => "directory",
            Self::Secret => "key file",
        }
    }

    /// The mode `chmod` sets.
    fn mode(self) -> &'static str {
        match self {
            Self::SocketDir | Self::PrivateDir => "700",
            Self::Socket | Self::Secret => "600",
        }
    }
}

/// One path to check; `meta` is `None` when it does not exist (nothing to check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) role: Role,
    pub(crate) path: PathBuf,
    pub(crate) meta: Option<Meta>,
}

/// Who besides the owner may do what, e.g. `group and others can read`.
fn who_can(mode: u32) -> String {
    let group = (mode >> 3) & 0o7;
    let other = mode & 0o7;
    let who = match (group != 0, other != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        _ => "others",
    };
    let bits = group | other;
    let mut verbs = Vec::new();
    if bits & 0o4 != 0 {
        verbs.push("read");
    }
    if bits & 0o2 != 0 {
        verbs.push("write");
    }
    if bits & 0o1 != 0 {
        verbs.push("open");
    }
    let verbs = match verbs.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    format!("{who} can {verbs} it")
}

/// The socket's directory, the socket, the data directory and the keys are private to the user.
pub(crate) fn permissions(items: &[Item], uid: u32) -> Check {
    const NAME: &str = "permissions";
    let mut status = Status::Ok;
    let mut findings = Vec::new();
    let mut chmod: Vec<(&str, Vec<String>)> = Vec::new();
    let mut other_fixes = Vec::new();
    let mut checked = Vec::new();
    for item in items {
        let Some(meta) = item.meta else { continue };
        checked.push(item.role.describe());
        let path = shell_quote(&item.path);
        let mut problem = |severity: Status, finding: String| {
            status = status.max(severity);
            findings.push(finding);
        };
        if item.role == Role::SocketDir && meta.kind == FileKind::Symlink {
            problem(
                Status::Fail,
                format!(
                    "the socket directory {} is a symlink: the daemon refuses it",
                    item.path.display()
                ),
            );
            other_fixes.push(format!("rm {path} && mkdir -m 700 {path}"));
            continue;
        }
        if meta.uid != uid {
            problem(
                Status::Fail,
                format!(
                    "{} belongs to uid {}, not to this user (uid {uid})",
                    item.path.display(),
                    meta.uid
                ),
            );
            other_fixes.push(format!("sudo chown {uid} {path}"));
        }
        let open = meta.mode & 0o077;
        if open == 0 {
            continue;
        }
        let severity = match item.role {
            // The daemon refuses a socket directory others can write to; reading is allowed
            // there (a group may be given the socket), and the daemon checks every peer's uid.
            Role::SocketDir if open & 0o022 != 0 => Status::Fail,
            Role::SocketDir | Role::Socket => Status::Warn,
            Role::PrivateDir | Role::Secret => Status::Fail,
        };
        problem(
            severity,
            format!(
                "{} {} is {:04o}: {}",
                item.role.describe(),
                item.path.display(),
                meta.mode,
                who_can(open)
            ),
        );
        let mode = item.role.mode();
        match chmod.iter_mut().find(|(m, _)| *m == mode) {
            Some((_, paths)) => paths.push(path),
            None => chmod.push((mode, vec![path])),
        }
    }
    if status == Status::Ok {
        return Check::ok(
            NAME,
            format!(
                "{} owned by uid {uid} and closed to group and others",
                join_counted(&checked)
            ),
        );
    }
    let mut fixes: Vec<String> = chmod
        .into_iter()
        .map(|(mode, paths)| format!("chmod {mode} {}", paths.join(" ")))
        .collect();
    fixes.extend(other_fixes);
    Check {
        name: NAME,
        status,
        detail: findings.join("; "),
        fix: Some(fixes.join(" && ")),
    }
}

/// `socket directory, socket, 2 directories and 3 key files`.
fn join_counted(names: &[&str]) -> String {
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for name in names {
        match counted.iter_mut().find(|(n, _)| n == name) {
            Some((_, count)) => *count += 1,
            None => counted.push((name, 1)),
        }
    }
    let parts: Vec<String> = counted
        .iter()
        .map(|(name, count)| match count {
            1 => (*name).to_owned(),
            n if name.ends_with('y') => format!("{n} {}ies", &name[..name.len() - 1]),
            n => format!("{n} {name}s"),
        })
        .collect();
    match parts.split_last() {
        None => "nothing".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

// ----- data directory -------------------------------------------------------------------------

/// What the data directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirState {
    Missing,
    Present { meta: Meta, writable: bool },
    Unreadable(String),
}

/// The data directory exists, is a directory, is the user's and is writable.
pub(crate) fn data_dir(
    path: &Path,
    source: &str,
    state: &DirState,
    uid: u32,
    commands: &Commands,
) -> Check {
    const NAME: &str = "data_dir";
    let shown = format!("{} ({source})", path.display());
    let quoted = shell_quote(path);
    match state {
        DirState::Missing if commands.running => Check::fail(
            NAME,
            format!("{shown} does not exist, yet the daemon runs on it"),
            commands.restart(),
        ),
        DirState::Missing => Check::warn(
            NAME,
            format!("{shown} does not exist yet: the daemon creates it at its first start"),
            commands.start(),
        ),
        DirState::Unreadable(why) => Check::fail(
            NAME,
            format!("{shown}: {why}"),
            format!("ls -ld {quoted} shows who may reach it"),
        ),
        DirState::Present { meta, writable } => {
            if meta.kind != FileKind::Dir {
                Check::fail(
                    NAME,
                    format!("{shown} is not a directory"),
                    format!(
                        "move it away (mv {quoted} {quoted}.orig) or choose another data directory"
                    ),
                )
            } else if meta.uid != uid {
                Check::fail(
                    NAME,
                    format!(
                        "{shown} belongs to uid {}, not to this user (uid {uid})",
                        meta.uid
                    ),
                    format!("sudo chown -R {uid} {quoted}"),
                )
            } else if !writable {
                Check::fail(
                    NAME,
                    format!("{shown} is not writable by this user"),
                    format!("chmod u+rwx {quoted}"),
                )
            } else {
                Check::ok(NAME, format!("{shown}: a writable directory of uid {uid}"))
            }
        }
    }
}

// ----- config ---------------------------------------------------------------------------------

/// What reading the config file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConfigState {
    Absent,
    Unreadable(String),
    Invalid(Vec<ConfigProblem>),
    Valid(ConfigFile),
}

impl ConfigState {
    pub(crate) fn file(&self) -> Option<&ConfigFile> {
        match self {
            Self::Valid(file) => Some(file),
            _ => None,
        }
    }
}

/// The config file that was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigFacts {
    pub(crate) path: PathBuf,
    /// Where the path came from: `--config`, `the running daemon`, `ATLASBRIDGE_CONFIG`, `the
    /// per-user default`.
    pub(crate) source: &'static str,
    /// Named by the user or the daemon: then it must exist.
    pub(crate) explicit: bool,
    pub(crate) state: ConfigState,
    /// What the running daemon loaded: `None` when it is not running, `Some(None)` when it runs
    /// on the embedded defaults.
    pub(crate) daemon_loaded: Option<Option<String>>,
}

/// The config file parses as the daemon would load it, and is the one the daemon runs with.
pub(crate) fn config(facts: &ConfigFacts, commands: &Commands) -> Check {
    const NAME: &str = "config";
    let path = &facts.path;
    let shown = format!("{} ({})", path.display(), facts.source);
    let quoted = shell_quote(path);
    let file = match &facts.state {
        ConfigState::Absent if facts.explicit => {
            return Check::fail(
                NAME,
                format!("{shown} does not exist: the daemon does not start without it"),
                format!(
                    "create {quoted}, or name another file with --config or ATLASBRIDGE_CONFIG"
                ),
            );
        }
        ConfigState::Absent => {
            return Check::ok(
                NAME,
                format!("no config file at {shown}: the embedded defaults apply"),
            );
        }
        ConfigState::Unreadable(why) => {
            return Check::fail(
                NAME,
                format!("{shown}: {why}"),
                format!("chmod u+r {quoted}"),
            );
        }
        ConfigState::Invalid(problems) => {
            let Some(first) = problems.first() else {
                return Check::fail(NAME, format!("{shown} does not load"), "edit it");
            };
            let more = match problems.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            return Check::fail(
                NAME,
                format!(
                    "{}:{}:{}: {}{more}: the daemon does not start with it",
                    path.display(),
                    first.line,
                    first.column,
                    first.message
                ),
                format!("correct line {} of {}", first.line, path.display()),
            );
        }
        ConfigState::Valid(file) => file,
    };
    let summary = describe_config(file);
    match &facts.daemon_loaded {
        Some(Some(loaded)) if Path::new(loaded) != path.as_path() => Check::warn(
            NAME,
            format!("{shown} parses ({summary}), but the running daemon loaded {loaded}"),
            format!(
                "{} daemon stop && {} daemon start --config {quoted}",
                commands.cli, commands.cli
            ),
        ),
        Some(None) => Check::warn(
            NAME,
            format!(
                "{shown} parses ({summary}), but the running daemon started without a config \
                 file"
            ),
            format!(
                "{} daemon stop && {} daemon start --config {quoted}",
                commands.cli, commands.cli
            ),
        ),
        Some(Some(_)) => Check::ok(
            NAME,
            format!("{shown} parses ({summary}); the running daemon loaded it"),
        ),
        None => Check::ok(NAME, format!("{shown} parses ({summary})")),
    }
}

fn describe_config(file: &ConfigFile) -> String {
    let edition = file
        .flags
        .edition
        .map_or_else(|| "edition not set".to_owned(), |e| format!("edition {e}"));
    let policy = file.policy_file.as_ref().map_or_else(
        || "built-in policy".to_owned(),
        |p| format!("policy {}", p.display()),
    );
    let cloud = if file.cloud.enabled {
        "cloud on"
    } else {
        "cloud off"
    };
    format!("{edition}, {policy}, {cloud}")
}

// ----- policy ---------------------------------------------------------------------------------

/// A policy file that loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolicySummary {
    pub(crate) name: String,
    pub(crate) hash: String,
    pub(crate) rules: usize,
    pub(crate) autonomy: String,
    /// The file as the loader read it (`~` expanded).
    pub(crate) source: PathBuf,
}

/// The configured policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PolicyFile {
    /// The config file does not parse, so which policy it names is unknown.
    Unknown,
    /// No `[policy] file`: the built-in safe-default decides.
    BuiltIn,
    /// `[policy] file`, validated with the loader of `atlasbridge policy validate`.
    File {
        path: PathBuf,
        result: Result<PolicySummary, Vec<PolicyError>>,
    },
}

/// The daemon's active policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ActivePolicy {
    NotRunning,
    Active(PolicyStatus),
    /// The configured policy did not load at start: decisions fail closed.
    NoneActive,
    Unknown(String),
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// `team (a9075535fe6b570e, 3 rules, autonomy assist)`.
fn described(name: &str, hash: &str, rules: usize, autonomy: &str) -> String {
    let plural = if rules == 1 { "" } else { "s" };
    format!(
        "{name} ({}, {rules} rule{plural}, autonomy {autonomy})",
        short(hash)
    )
}

fn first_error(errors: &[serde_json::Value]) -> String {
    let Some(first) = errors.first() else {
        return "no details".to_owned();
    };
    let text = |key: &str| first.get(key).map_or_else(String::new, value_text);
    let mut shown = format!(
        "{}:{}:{}: {}: {}",
        text("file"),
        text("line"),
        text("column"),
        text("path"),
        text("message")
    );
    if errors.len() > 1 {
        let _ = write!(shown, " (and {} more)", errors.len() - 1);
    }
    shown
}

fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The configured policy file validates, and is what the daemon has active.
pub(crate) fn policy(file: &PolicyFile, active: &ActivePolicy, commands: &Commands) -> Check {
    const NAME: &str = "policy";
    let reload = format!("{} policy reload", commands.cli);
    if let PolicyFile::File {
        path,
        result: Err(errors),
    } = file
    {
        let quoted = shell_quote(path);
        let (first, line) = errors.first().map_or_else(
            || (format!("{} does not load", path.display()), 0),
            |e| (e.to_string(), e.line),
        );
        let more = match errors.len() {
            0 | 1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        let consequence = match active {
            ActivePolicy::Active(status) => {
                format!("; the daemon keeps {} active", status.name)
            }
            ActivePolicy::NoneActive => {
                "; no policy is active: every decision fails closed".to_owned()
            }
            ActivePolicy::NotRunning => "; the daemon would start with no active policy, \
                                         failing every decision closed"
                .to_owned(),
            ActivePolicy::Unknown(_) => String::new(),
        };
        let then = if commands.running {
            reload
        } else {
            commands.start()
        };
        return Check::fail(
            NAME,
            format!("{first}{more}{consequence}"),
            format!(
                "correct line {line} of {} (every problem: `{} policy validate {quoted}`), then \
                 {then}",
                path.display(),
                commands.cli
            ),
        );
    }
    let status = match active {
        ActivePolicy::NoneActive => {
            return Check::fail(
                NAME,
                "no active policy: the configured policy did not load when the daemon started, \
                 so every decision fails closed",
                reload,
            );
        }
        ActivePolicy::Unknown(why) => {
            return Check::warn(
                NAME,
                format!("cannot ask the daemon for its policy: {why}"),
                format!("{} policy status", commands.cli),
            );
        }
        ActivePolicy::Active(status) => Some(status),
        ActivePolicy::NotRunning => None,
    };
    if let Some(status) = status
        && let Some(errors) = &status.last_error
    {
        return Check::warn(
            NAME,
            format!(
                "the last reload failed ({}); the daemon keeps {} ({}) active",
                first_error(errors),
                status.name,
                short(&status.policy_hash)
            ),
            reload,
        );
    }
    match (file, status) {
        (PolicyFile::Unknown, Some(status)) => Check::warn(
            NAME,
            format!(
                "the daemon has {} ({}) active; which policy the config names is unknown: the \
                 config file does not parse",
                status.name,
                short(&status.policy_hash)
            ),
            "correct the config file first (see config)",
        ),
        (PolicyFile::Unknown, None) => Check::warn(
            NAME,
            "which policy the config names is unknown: the config file does not parse",
            "correct the config file first (see config)",
        ),
        (PolicyFile::BuiltIn, None) => Check::ok(
            NAME,
            "no [policy] file: the built-in safe-default decides (assist: every answer goes to \
             a person)",
        ),
        (PolicyFile::BuiltIn, Some(status)) => Check::ok(
            NAME,
            format!(
                "{} from {}, active in the daemon",
                described(
                    &status.name,
                    &status.policy_hash,
                    status.rules,
                    &status.autonomy_mode
                ),
                status.source.as_deref().unwrap_or("the built-in default")
            ),
        ),
        (
            PolicyFile::File {
                result: Ok(summary),
                ..
            },
            None,
        ) => Check::ok(
            NAME,
            format!(
                "{} is valid: {}",
                summary.source.display(),
                described(
                    &summary.name,
                    &summary.hash,
                    summary.rules,
                    &summary.autonomy
                )
            ),
        ),
        (
            PolicyFile::File {
                result: Ok(summary),
                ..
            },
            Some(status),
        ) => {
            let file = summary.source.display().to_string();
            if status.source.as_deref() != Some(file.as_str()) {
                Check::warn(
                    NAME,
                    format!(
                        "the config names {file}, but the daemon's active policy {} comes from {}",
                        status.name,
                        status.source.as_deref().unwrap_or("the built-in default")
                    ),
                    reload,
                )
            } else if status.policy_hash != summary.hash {
                Check::warn(
                    NAME,
                    format!(
                        "{file} changed since the daemon loaded it (active {}, file {})",
                        short(&status.policy_hash),
                        short(&summary.hash)
                    ),
                    reload,
                )
            } else {
                Check::ok(
                    NAME,
                    format!(
                        "{} from {file}, active in the daemon",
                        described(
                            &status.name,
                            &status.policy_hash,
                            status.rules,
                            &status.autonomy_mode
                        )
                    ),
                )
            }
        }
        (PolicyFile::File { result: Err(_), .. }, _) => {
            Check::fail(NAME, "the policy file does not load", reload)
        }
    }
}

// ----- trace and audit log --------------------------------------------------------------------

/// Where the verdict on a chain's head comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainView {
    /// The running daemon verified the tail at its start and has appended to it since; reading
    /// files it is writing could catch a line half-written, so its word is taken.
    FromDaemon {
        health: String,
        chain: ChainStatus,
        /// `v1` or `v2`, for the trace.
        format: Option<String>,
    },
    FromFiles(ChainFiles),
}

fn chain_words(kind: ChainKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        ChainKind::Trace => ("trace", "the trace", "trace"),
        ChainKind::Audit => ("audit", "the audit log", "audit"),
    }
}

fn head_text(head: Option<&ChainHead>) -> String {
    head.map_or_else(
        || "no entry".to_owned(),
        |h| format!("seq {} ({})", h.seq, short(&h.entry_hash)),
    )
}

/// The head of the trace or the audit log verifies.
pub(crate) fn chain(kind: ChainKind, view: &ChainView, commands: &Commands) -> Check {
    let (name, what, command) = chain_words(kind);
    let repair = commands.with_daemon(&format!("{command} repair --start-new-segment"));
    match view {
        ChainView::FromDaemon {
            health,
            chain,
            format,
        } => {
            if let Some(problem) = &chain.problem {
                return Check::fail(name, format!("{what}: {problem}"), repair);
            }
            if kind == ChainKind::Trace && health == "degraded" {
                return Check::fail(
                    name,
                    "writing the trace is failing: decisions are refused with -32004 until a \
                     write succeeds",
                    "free space on the data directory's filesystem (see disk) and read the \
                     daemon's log",
                );
            }
            let head = match chain.seq {
                Some(seq) => format!("head seq {seq}, {} entries", chain.entries),
                None => "empty".to_owned(),
            };
            let v1 = if format.as_deref() == Some("v1") {
                "; decisions go to the v1 trace (decision_trace_v2 is off)"
            } else {
                ""
            };
            Check::ok(
                name,
                format!("{head}, verified by the daemon at its start{v1}"),
            )
        }
        ChainView::FromFiles(files) => match files {
            ChainFiles::Empty => Check::ok(name, "no entries yet"),
            ChainFiles::Valid {
                head,
                segment,
                entries,
                torn: None,
            } => Check::ok(
                name,
                format!(
                    "head {}: the last segment {} verifies ({entries} entries)",
                    head_text(Some(head)),
                    segment.display()
                ),
            ),
            ChainFiles::Valid {
                head,
                segment,
                torn: Some(bytes),
                ..
            } => Check::warn(
                name,
                format!(
                    "head {}; {} ends in a torn line ({bytes} bytes) that the daemon cuts off at \
                     its next start",
                    head_text(Some(head)),
                    segment.display()
                ),
                commands.start(),
            ),
            ChainFiles::Broken {
                error,
                first_broken_at,
            } => {
                let at = first_broken_at.map_or_else(String::new, |s| format!(" at seq {s}"));
                let place = if error.line > 0 {
                    format!("{}:{}", error.file, error.line)
                } else {
                    error.file.clone()
                };
                Check::fail(
                    name,
                    format!(
                        "{what} is broken{at}: {} at {place}: {}; the daemon refuses appends \
                         until it is repaired",
                        error.kind, error.detail
                    ),
                    repair,
                )
            }
            ChainFiles::Lost {
                expected,
                found,
                state_file,
            } => Check::fail(
                name,
                format!(
                    "{what} ends at {}, but {} recorded seq {}: entries were removed",
                    head_text(found.as_ref()),
                    state_file.display(),
                    expected.seq
                ),
                repair,
            ),
            ChainFiles::Unreadable(why) => Check::fail(
                name,
                format!("{what} cannot be read: {why}"),
                "check the permissions of the data directory (see permissions)",
            ),
        },
    }
}

// ----- disk space -----------------------------------------------------------------------------

/// Below this much free space, `doctor` fails.
pub(crate) const DISK_FAIL_BELOW: u64 = 100 << 20;
/// Below this much free space, `doctor` warns…
pub(crate) const DISK_WARN_BELOW: u64 = 1 << 30;
/// …and below this share of the filesystem too.
pub(crate) const DISK_WARN_BELOW_PERCENT: u64 = 5;

/// `1.5 GiB`, `200 MiB`, `12 KiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else if value < 10.0 && value.fract() != 0.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// Free space on the data directory's filesystem: `Ok((available, size))` in bytes.
pub(crate) fn disk(path: &Path, space: &Result<(u64, u64), String>) -> Check {
    const NAME: &str = "disk";
    let (free, total) = match space {
        Ok(space) => *space,
        Err(why) => {
            return Check::warn(
                NAME,
                format!("cannot read the free space of {}: {why}", path.display()),
                format!("df -h {}", shell_quote(path)),
            );
        }
    };
    let percent = (u128::from(free) * 100)
        .checked_div(u128::from(total))
        .unwrap_or(0);
    let detail = format!(
        "{} free of {} ({percent} %) on the filesystem of {}",
        bytes(free),
        bytes(total),
        path.display()
    );
    let fix = format!(
        "free space on the filesystem of {}: every decision adds to the trace",
        path.display()
    );
    if free < DISK_FAIL_BELOW {
        Check::fail(
            NAME,
            format!("{detail}: below {}", bytes(DISK_FAIL_BELOW)),
            fix,
        )
    } else if free < DISK_WARN_BELOW || percent < u128::from(DISK_WARN_BELOW_PERCENT) {
        Check::warn(
            NAME,
            format!(
                "{detail}: below {} or {DISK_WARN_BELOW_PERCENT} %",
                bytes(DISK_WARN_BELOW)
            ),
            fix,
        )
    } else {
        Check::ok(NAME, detail)
    }
}

// ----- cloud ----------------------------------------------------------------------------------

/// The API key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyFile {
    Missing,
    Unreadable(String),
    Present { mode: u32, empty: bool },
}

/// What the running daemon says of its uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloudView {
    NotRunning,
    Status(Box<CloudStatusResult>),
    Unknown(String),
}

/// The facts of the `[cloud]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloudFacts {
    /// `None` when the config file does not parse.
    pub(crate) section: Option<CloudSection>,
    /// `ATLASBRIDGE_CLOUD_API_KEY` is set in this environment.
    pub(crate) env_key: bool,
    /// The API key file, when one is configured.
    pub(crate) key_file: Option<KeyFile>,
    /// Whether the CA file exists, when one is configured.
    pub(crate) ca_file_exists: Option<bool>,
    /// Whether the edition's `cloud_control_channel` flag is on.
    pub(crate) channel_enabled: bool,
    pub(crate) running: CloudView,
}

/// When `[cloud]` is on: its keys, the API key, and the link's state.
pub(crate) fn cloud(facts: &CloudFacts, commands: &Commands) -> Check {
    const NAME: &str = "cloud";
    let setup = format!("{} cloud setup", commands.cli);
    let Some(section) = &facts.section else {
        return Check::warn(
            NAME,
            "not checked: the config file does not parse",
            "correct the config file first (see config)",
        );
    };
    let state = match &facts.running {
        CloudView::Status(status) => Some(status.as_ref()),
        _ => None,
    };
    if !section.enabled {
        if state.is_some_and(|s| s.enabled) {
            return Check::warn(
                NAME,
                "the config turns the uplink off, but the running daemon has it on",
                commands.restart(),
            );
        }
        return Check::ok(NAME, "disabled ([cloud] enabled is not set)");
    }
    let endpoint = section.endpoint.as_deref().unwrap_or("(no endpoint)");
    if !facts.env_key {
        let Some(key_path) = &section.api_key_file else {
            return Check::fail(
                NAME,
                "enabled, but no API key: neither ATLASBRIDGE_CLOUD_API_KEY nor [cloud] \
                 api_key_file is set",
                setup,
            );
        };
        let shown = key_path.display();
        match &facts.key_file {
            None | Some(KeyFile::Missing) => {
                return Check::fail(
                    NAME,
                    format!("the API key file {shown} does not exist"),
                    setup,
                );
            }
            Some(KeyFile::Unreadable(why)) => {
                return Check::fail(
                    NAME,
                    format!("the API key file {shown} cannot be read: {why}"),
                    format!("chmod 600 {}", shell_quote(key_path)),
                );
            }
            Some(KeyFile::Present { mode, .. }) if mode & 0o077 != 0 => {
                return Check::fail(
                    NAME,
                    format!(
                        "the API key file {shown} is {mode:04o}: the daemon refuses a key \
                         others can read"
                    ),
                    format!("chmod 600 {}", shell_quote(key_path)),
                );
            }
            Some(KeyFile::Present { empty: true, .. }) => {
                return Check::fail(NAME, format!("the API key file {shown} is empty"), setup);
            }
            Some(KeyFile::Present { .. }) => {}
        }
    }
    if let (Some(ca), Some(false)) = (&section.ca_file, facts.ca_file_exists) {
        return Check::fail(
            NAME,
            format!("[cloud] ca_file {} does not exist", ca.display()),
            setup,
        );
    }
    if !facts.channel_enabled {
        return Check::warn(
            NAME,
            "enabled, but the cloud_control_channel feature is off in this edition: the uplink \
             does not start",
            "run the enterprise edition (ATLASBRIDGE_EDITION=enterprise), or set \
             cloud_control_channel = true under [features]; then restart the daemon",
        );
    }
    let key = if facts.env_key {
        "API key from ATLASBRIDGE_CLOUD_API_KEY (the daemon needs it in its own environment)"
    } else {
        "API key file private"
    };
    match &facts.running {
        CloudView::NotRunning => Check::ok(
            NAME,
            format!(
                "enabled: {endpoint}, {key}; the link is not tested while the daemon is stopped"
            ),
        ),
        CloudView::Unknown(why) => Check::warn(
            NAME,
            format!("enabled: {endpoint}; cannot ask the daemon for the link's state: {why}"),
            format!("{} cloud status", commands.cli),
        ),
        CloudView::Status(status) => {
            let why = status
                .reason
                .iter()
                .chain(status.last_error.iter())
                .cloned()
                .collect::<Vec<_>>()
                .join(": ");
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            match status.state.as_str() {
                "connected" => Check::ok(
                    NAME,
                    format!(
                        "connected to {endpoint}{}",
                        status
                            .connected_since
                            .as_ref()
                            .map(|s| format!(" since {s}"))
                            .unwrap_or_default()
                    ),
                ),
                "disabled" => Check::warn(
                    NAME,
                    format!(
                        "the config turns the uplink on, but the running daemon has it off{why}"
                    ),
                    commands.restart(),
                ),
                _ if status.reason.as_deref() == Some("auth_failed") => Check::fail(
                    NAME,
                    format!("{}: the cloud refused the credentials{why}", status.state),
                    setup,
                ),
                state => Check::warn(
                    NAME,
                    format!("{state} to {endpoint}{why}"),
                    format!("{} cloud status", commands.cli),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use atlasbridge_protocol::features::Edition;
    use atlasbridge_protocol::methods::{CloudStreamStatus, CloudSummary, TraceStatus};
    use atlasbridge_protocol::trace::{BreakKind, ChainBreak};

    use super::*;

    fn stopped() -> Commands {
        Commands {
            cli: "atlasbridge".to_owned(),
            running: false,
        }
    }

    fn running() -> Commands {
        Commands {
            cli: "atlasbridge".to_owned(),
            running: true,
        }
    }

    fn chain_status(seq: Option<u64>, problem: Option<&str>) -> ChainStatus {
        ChainStatus {
            seq,
            entry_hash: seq.map(|_| "ab".repeat(32)),
            entries: seq.map_or(0, |s| s + 1),
            problem: problem.map(str::to_owned),
        }
    }

    fn daemon_status(version: &str) -> DaemonStatus {
        DaemonStatus {
            pid: 42,
            version: version.to_owned(),
            protocol: 1,
            uptime_s: 192,
            socket: "/run/ab.sock".to_owned(),
            data_dir: "/data".to_owned(),
            config_file: None,
            edition: Edition::Pro,
            connections: 1,
            health: "ok".to_owned(),
            trace: TraceStatus {
                format: "v2".to_owned(),
                durability: "fsync".to_owned(),
                chain: chain_status(Some(3), None),
            },
            audit: chain_status(Some(1), None),
            checkpoint: None,
            cloud: CloudSummary {
                state: "disabled".to_owned(),
            },
            sessions: 0,
            role: None,
        }
    }

    fn policy_status(source: Option<&str>, hash: &str) -> PolicyStatus {
        PolicyStatus {
            name: "team".to_owned(),
            policy_version: "1".to_owned(),
            policy_hash: hash.to_owned(),
            autonomy_mode: "assist".to_owned(),
            rules: 3,
            source: source.map(str::to_owned),
            loaded_at: "2026-11-24T01:02:03Z".to_owned(),
            last_error: None,
        }
    }

    fn binary(version: Result<&str, &str>) -> DaemonBinary {
        DaemonBinary {
            path: PathBuf::from("/usr/bin/atlasbridged"),
            source: BinarySource::NextToCli,
            version: version.map(str::to_owned).map_err(str::to_owned),
        }
    }

    #[test]
    fn binaries_must_be_found_and_of_one_version() {
        let ok = binaries("0.1.0", Some(&binary(Ok("atlasbridged 0.1.0\n"))), false);
        assert_eq!(ok.status, Status::Ok, "{ok:?}");
        assert!(
            ok.detail
                .contains("/usr/bin/atlasbridged (next to atlasbridge)")
        );

        let other = binaries("0.1.0", Some(&binary(Ok("atlasbridged 0.2.0"))), false);
        assert_eq!(other.status, Status::Fail);
        assert!(other.detail.contains("atlasbridged 0.2.0"), "{other:?}");

        let foreign = binaries("0.1.0", Some(&binary(Ok("bash 5.2"))), false);
        assert_eq!(foreign.status, Status::Fail);
        let broken = binaries("0.1.0", Some(&binary(Err("permission denied"))), false);
        assert_eq!(broken.status, Status::Fail);

        assert_eq!(binaries("0.1.0", None, false).status, Status::Fail);
        assert_eq!(
            binaries("0.1.0", None, true).status,
            Status::Warn,
            "a daemon runs, from elsewhere"
        );
    }

    #[test]
    fn a_stopped_daemon_is_a_warning_with_the_start_command() {
        let socket = Path::new("/run/user/1/atlasbridge/atlasbridged.sock");
        let check = socket_check(socket, &DaemonProbe::NotRunning(Leftover::Nothing));
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.detail,
            "/run/user/1/atlasbridge/atlasbridged.sock: atlasbridged is not running"
        );
        assert_eq!(check.fix.as_deref(), Some("atlasbridge daemon start"));

        let stale = socket_check(socket, &DaemonProbe::NotRunning(Leftover::StaleSocket));
        assert!(stale.detail.contains("stale socket"), "{stale:?}");
        let blocked = socket_check(socket, &DaemonProbe::NotRunning(Leftover::NotASocket));
        assert_eq!(blocked.status, Status::Fail);

        let long = PathBuf::from(format!("/{}", "x".repeat(MAX_SOCKET_PATH)));
        let check = socket_check(&long, &DaemonProbe::NotRunning(Leftover::Nothing));
        assert_eq!(check.status, Status::Fail, "{check:?}");
    }

    fn socket_check(path: &Path, probe: &DaemonProbe) -> Check {
        socket(path, probe, "0.1.0", Path::new("/log"), &stopped())
    }

    #[test]
    fn a_running_daemon_of_another_version_should_be_restarted() {
        let socket_path = Path::new("/run/ab.sock");
        let same = DaemonProbe::Running(Box::new(daemon_status("0.1.0")));
        let check = socket(socket_path, &same, "0.1.0", Path::new("/log"), &running());
        assert_eq!(check.status, Status::Ok);
        assert_eq!(
            check.detail,
            "/run/ab.sock: atlasbridged 0.1.0 running (pid 42, up 3m 12s)"
        );
        let older = DaemonProbe::Running(Box::new(daemon_status("0.0.9")));
        let check = socket(socket_path, &older, "0.1.0", Path::new("/log"), &running());
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.fix.as_deref(),
            Some("atlasbridge daemon stop && atlasbridge daemon start")
        );
        let check = socket(
            socket_path,
            &DaemonProbe::Unreachable("timed out".into()),
            "0.1.0",
            Path::new("/data/logs/atlasbridged.log"),
            &running(),
        );
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.fix.as_deref(),
            Some(
                "read the daemon's log (/data/logs/atlasbridged.log), then atlasbridge daemon \
                 stop && atlasbridge daemon start"
            )
        );
    }

    fn item(role: Role, path: &str, mode: u32, uid: u32, kind: FileKind) -> Item {
        Item {
            role,
            path: PathBuf::from(path),
            meta: Some(Meta { mode, uid, kind }),
        }
    }

    #[test]
    fn private_paths_are_ok_and_missing_ones_are_skipped() {
        let items = [
            item(Role::SocketDir, "/run/ab", 0o700, 7, FileKind::Dir),
            item(Role::Socket, "/run/ab/d.sock", 0o600, 7, FileKind::Socket),
            item(Role::PrivateDir, "/data", 0o700, 7, FileKind::Dir),
            item(Role::PrivateDir, "/data/keys", 0o700, 7, FileKind::Dir),
            item(
                Role::Secret,
                "/data/keys/identity.key",
                0o600,
                7,
                FileKind::File,
            ),
            item(
                Role::Secret,
                "/data/keys/epoch.key",
                0o400,
                7,
                FileKind::File,
            ),
            Item {
                role: Role::Secret,
                path: PathBuf::from("/data/keys/epoch.key.next"),
                meta: None,
            },
        ];
        let check = permissions(&items, 7);
        assert_eq!(check.status, Status::Ok);
        assert_eq!(
            check.detail,
            "socket directory, socket, 2 directories and 2 key files owned by uid 7 and closed \
             to group and others"
        );
    }

    #[test]
    fn a_readable_key_fails_with_the_chmod_that_fixes_it() {
        let items = [
            item(
                Role::Secret,
                "/data/keys/identity.key",
                0o644,
                7,
                FileKind::File,
            ),
            item(
                Role::Secret,
                "/data/my keys/epoch.key",
                0o660,
                7,
                FileKind::File,
            ),
            item(Role::PrivateDir, "/data", 0o755, 7, FileKind::Dir),
        ];
        let check = permissions(&items, 7);
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.detail,
            "key file /data/keys/identity.key is 0644: group and others can read it; key file \
             /data/my keys/epoch.key is 0660: its group can read and write it; directory /data \
             is 0755: group and others can read and open it"
        );
        assert_eq!(
            check.fix.as_deref(),
            Some("chmod 600 /data/keys/identity.key '/data/my keys/epoch.key' && chmod 700 /data")
        );
    }

    #[test]
    fn the_socket_directory_rules_are_the_daemons() {
        let readable = permissions(
            &[item(Role::SocketDir, "/run/ab", 0o750, 7, FileKind::Dir)],
            7,
        );
        assert_eq!(
            readable.status,
            Status::Warn,
            "a group may read: {readable:?}"
        );
        let writable = permissions(
            &[item(Role::SocketDir, "/run/ab", 0o770, 7, FileKind::Dir)],
            7,
        );
        assert_eq!(writable.status, Status::Fail);
        assert_eq!(writable.fix.as_deref(), Some("chmod 700 /run/ab"));
        let link = permissions(
            &[item(
                Role::SocketDir,
                "/run/ab",
                0o777,
                7,
                FileKind::Symlink,
            )],
            7,
        );
        assert_eq!(link.status, Status::Fail);
        let foreign = permissions(
            &[item(Role::SocketDir, "/run/ab", 0o700, 8, FileKind::Dir)],
            7,
        );
        assert_eq!(foreign.status, Status::Fail);
        assert_eq!(foreign.fix.as_deref(), Some("sudo chown 7 /run/ab"));
        let socket = permissions(
            &[item(
                Role::Socket,
                "/run/ab/d.sock",
                0o666,
                7,
                FileKind::Socket,
            )],
            7,
        );
        assert_eq!(socket.status, Status::Warn);
        assert_eq!(socket.fix.as_deref(), Some("chmod 600 /run/ab/d.sock"));
    }

    #[test]
    fn the_data_directory_must_be_a_writable_directory_of_the_user() {
        let dir = Path::new("/data");
        let meta = Meta {
            mode: 0o700,
            uid: 7,
            kind: FileKind::Dir,
        };
        let present = |writable| DirState::Present { meta, writable };
        let check = |state: &DirState, commands: &Commands| {
            data_dir(dir, "ATLASBRIDGE_DATA_DIR", state, 7, commands)
        };
        assert_eq!(check(&present(true), &stopped()).status, Status::Ok);
        let read_only = check(&present(false), &stopped());
        assert_eq!(read_only.status, Status::Fail);
        assert_eq!(read_only.fix.as_deref(), Some("chmod u+rwx /data"));
        let missing = check(&DirState::Missing, &stopped());
        assert_eq!(missing.status, Status::Warn);
        assert_eq!(missing.fix.as_deref(), Some("atlasbridge daemon start"));
        assert_eq!(check(&DirState::Missing, &running()).status, Status::Fail);
        let foreign = data_dir(dir, "x", &present(true), 8, &stopped());
        assert_eq!(foreign.fix.as_deref(), Some("sudo chown -R 8 /data"));
    }

    fn config_facts(state: ConfigState, daemon_loaded: Option<Option<String>>) -> ConfigFacts {
        ConfigFacts {
            path: PathBuf::from("/etc/ab/config.toml"),
            source: "ATLASBRIDGE_CONFIG",
            explicit: true,
            state,
            daemon_loaded,
        }
    }

    #[test]
    fn config_verdicts() {
        let invalid = config(
            &config_facts(
                ConfigState::Invalid(vec![
                    ConfigProblem {
                        line: 4,
                        column: 1,
                        message: "unknown key `x` in [daemon]".to_owned(),
                    },
                    ConfigProblem {
                        line: 9,
                        column: 3,
                        message: "another".to_owned(),
                    },
                ]),
                None,
            ),
            &stopped(),
        );
        assert_eq!(invalid.status, Status::Fail);
        assert_eq!(
            invalid.detail,
            "/etc/ab/config.toml:4:1: unknown key `x` in [daemon] (and 1 more): the daemon does \
             not start with it"
        );
        assert_eq!(
            config(&config_facts(ConfigState::Absent, None), &stopped()).status,
            Status::Fail,
            "a file named explicitly must exist"
        );
        let mut default = config_facts(ConfigState::Absent, None);
        default.explicit = false;
        assert_eq!(config(&default, &stopped()).status, Status::Ok);

        let valid = ConfigState::Valid(ConfigFile::default());
        let loaded = config(
            &config_facts(valid.clone(), Some(Some("/etc/ab/config.toml".into()))),
            &running(),
        );
        assert_eq!(loaded.status, Status::Ok, "{loaded:?}");
        assert!(loaded.detail.ends_with("the running daemon loaded it"));
        let other = config(
            &config_facts(valid.clone(), Some(Some("/elsewhere.toml".into()))),
            &running(),
        );
        assert_eq!(other.status, Status::Warn);
        let defaults = config(&config_facts(valid, Some(None)), &running());
        assert_eq!(defaults.status, Status::Warn);
        assert_eq!(
            defaults.fix.as_deref(),
            Some(
                "atlasbridge daemon stop && atlasbridge daemon start --config /etc/ab/config.toml"
            )
        );
    }

    fn summary(hash: &str) -> PolicySummary {
        PolicySummary {
            name: "team".to_owned(),
            hash: hash.to_owned(),
            rules: 3,
            autonomy: "assist".to_owned(),
            source: PathBuf::from("/etc/ab/team.yaml"),
        }
    }

    fn file_policy(result: Result<PolicySummary, Vec<PolicyError>>) -> PolicyFile {
        PolicyFile::File {
            path: PathBuf::from("/etc/ab/team.yaml"),
            result,
        }
    }

    #[test]
    fn a_broken_policy_file_fails_naming_the_file_and_line() {
        let error = PolicyError::new(
            Path::new("/etc/ab/team.yaml"),
            6,
            23,
            "rules → 0 → action",
            "unknown action 'maybe'",
        );
        let check = policy(
            &file_policy(Err(vec![error])),
            &ActivePolicy::Active(policy_status(Some("/etc/ab/team.yaml"), "aa")),
            &running(),
        );
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.detail,
            "/etc/ab/team.yaml:6:23: rules → 0 → action: unknown action 'maybe'; the daemon \
             keeps team active"
        );
        assert_eq!(
            check.fix.as_deref(),
            Some(
                "correct line 6 of /etc/ab/team.yaml (every problem: `atlasbridge policy \
                 validate /etc/ab/team.yaml`), then atlasbridge policy reload"
            )
        );
    }

    #[test]
    fn the_active_policy_is_compared_with_the_file() {
        let hash = "a9075535fe6b570e".repeat(4);
        let same = policy(
            &file_policy(Ok(summary(&hash))),
            &ActivePolicy::Active(policy_status(Some("/etc/ab/team.yaml"), &hash)),
            &running(),
        );
        assert_eq!(same.status, Status::Ok, "{same:?}");
        assert_eq!(
            same.detail,
            "team (a9075535fe6b570e, 3 rules, autonomy assist) from /etc/ab/team.yaml, active \
             in the daemon"
        );
        let changed = policy(
            &file_policy(Ok(summary("bb"))),
            &ActivePolicy::Active(policy_status(Some("/etc/ab/team.yaml"), &hash)),
            &running(),
        );
        assert_eq!(changed.status, Status::Warn);
        assert_eq!(changed.fix.as_deref(), Some("atlasbridge policy reload"));
        let elsewhere = policy(
            &file_policy(Ok(summary(&hash))),
            &ActivePolicy::Active(policy_status(None, &hash)),
            &running(),
        );
        assert_eq!(elsewhere.status, Status::Warn);

        let mut failed_reload = policy_status(Some("/etc/ab/team.yaml"), &hash);
        failed_reload.last_error = Some(vec![serde_json::json!({
            "file": "/etc/ab/team.yaml", "line": 2, "column": 1, "path": "rules",
            "message": "bad"})]);
        let check = policy(
            &file_policy(Ok(summary(&hash))),
            &ActivePolicy::Active(failed_reload),
            &running(),
        );
        assert_eq!(check.status, Status::Warn);
        assert!(
            check.detail.contains("/etc/ab/team.yaml:2:1: rules: bad"),
            "{check:?}"
        );
        assert_eq!(
            policy(&PolicyFile::BuiltIn, &ActivePolicy::NoneActive, &running()).status,
            Status::Fail
        );
        assert_eq!(
            policy(&PolicyFile::BuiltIn, &ActivePolicy::NotRunning, &stopped()).status,
            Status::Ok
        );
    }

    #[test]
    fn a_broken_chain_names_the_place_and_the_repair() {
        let view = ChainView::FromFiles(ChainFiles::Broken {
            error: ChainBreak {
                kind: BreakKind::HashMismatch,
                file: "/data/trace/decisions-000000000000.jsonl".to_owned(),
                line: 4,
                detail: "the hash does not match".to_owned(),
            },
            first_broken_at: Some(3),
        });
        let check = chain(ChainKind::Trace, &view, &stopped());
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.detail,
            "the trace is broken at seq 3: hash_mismatch at \
             /data/trace/decisions-000000000000.jsonl:4: the hash does not match; the daemon \
             refuses appends until it is repaired"
        );
        assert_eq!(
            check.fix.as_deref(),
            Some("atlasbridge daemon start && atlasbridge trace repair --start-new-segment")
        );

        let from_daemon = ChainView::FromDaemon {
            health: "broken".to_owned(),
            chain: chain_status(
                Some(2),
                Some("the chain is broken at seq 3 (hash_mismatch)"),
            ),
            format: Some("v2".to_owned()),
        };
        let check = chain(ChainKind::Trace, &from_daemon, &running());
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.fix.as_deref(),
            Some("atlasbridge trace repair --start-new-segment")
        );
        let audit_ok = ChainView::FromDaemon {
            health: "broken".to_owned(),
            chain: chain_status(Some(9), None),
            format: None,
        };
        let check = chain(ChainKind::Audit, &audit_ok, &running());
        assert_eq!(
            check.status,
            Status::Ok,
            "the broken chain is the other one"
        );
        assert_eq!(
            check.detail,
            "head seq 9, 10 entries, verified by the daemon at its start"
        );
    }

    #[test]
    fn a_torn_tail_and_lost_entries() {
        let head = ChainHead {
            seq: 4,
            entry_hash: "cd".repeat(32),
        };
        let torn = ChainView::FromFiles(ChainFiles::Valid {
            head: head.clone(),
            segment: PathBuf::from("/data/trace/decisions-000000000000.jsonl"),
            entries: 5,
            torn: Some(32),
        });
        let check = chain(ChainKind::Trace, &torn, &stopped());
        assert_eq!(check.status, Status::Warn);
        let lost = ChainView::FromFiles(ChainFiles::Lost {
            expected: ChainHead {
                seq: 9,
                entry_hash: "ef".repeat(32),
            },
            found: Some(head),
            state_file: PathBuf::from("/data/state/heads.json"),
        });
        let check = chain(ChainKind::Audit, &lost, &stopped());
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.detail,
            "the audit log ends at seq 4 (cdcdcdcdcdcdcdcd), but /data/state/heads.json recorded \
             seq 9: entries were removed"
        );
        assert_eq!(
            check.fix.as_deref(),
            Some("atlasbridge daemon start && atlasbridge audit repair --start-new-segment")
        );
    }

    #[test]
    fn disk_thresholds() {
        let path = Path::new("/data");
        let gib = 1u64 << 30;
        assert_eq!(disk(path, &Ok((50 * gib, 100 * gib))).status, Status::Ok);
        assert_eq!(
            disk(path, &Ok((50 * gib, 100 * gib))).detail,
            "50 GiB free of 100 GiB (50 %) on the filesystem of /data"
        );
        assert_eq!(
            disk(path, &Ok((gib / 2, 2 * gib))).status,
            Status::Warn,
            "below 1 GiB"
        );
        assert_eq!(
            disk(path, &Ok((4 * gib, 100 * gib))).status,
            Status::Warn,
            "below 5 %"
        );
        assert_eq!(
            disk(path, &Ok((99 << 20, 200 << 20))).status,
            Status::Fail,
            "below 100 MiB"
        );
        assert_eq!(disk(path, &Err("gone".into())).status, Status::Warn);
    }

    fn cloud_facts(section: CloudSection) -> CloudFacts {
        CloudFacts {
            section: Some(section),
            env_key: false,
            key_file: Some(KeyFile::Present {
                mode: 0o600,
                empty: false,
            }),
            ca_file_exists: None,
            channel_enabled: true,
            running: CloudView::NotRunning,
        }
    }

    fn enabled() -> CloudSection {
        CloudSection {
            enabled: true,
            endpoint: Some("wss://cloud.example/v1/connect".to_owned()),
            org_id: Some("org".to_owned()),
            api_key_file: Some(PathBuf::from("/etc/ab/cloud-api-key")),
            ca_file: None,
        }
    }

    fn cloud_state(state: &str, reason: Option<&str>) -> CloudView {
        let stream = CloudStreamStatus {
            head_seq: None,
            acked_seq: None,
            backlog: 0,
        };
        CloudView::Status(Box::new(CloudStatusResult {
            enabled: state != "disabled",
            state: state.to_owned(),
            reason: reason.map(str::to_owned),
            endpoint: None,
            runtime_id: None,
            connected_since: None,
            last_heartbeat_sent: None,
            last_heartbeat_acked: None,
            token_expires_at: None,
            clock_skew_s: None,
            trace: stream.clone(),
            audit: stream,
            policy_sync: "synced".to_owned(),
            connections: 1,
            last_error: None,
        }))
    }

    #[test]
    fn cloud_verdicts() {
        let off = cloud(&cloud_facts(CloudSection::default()), &stopped());
        assert_eq!(off.status, Status::Ok);
        assert_eq!(off.detail, "disabled ([cloud] enabled is not set)");

        let good = cloud(&cloud_facts(enabled()), &stopped());
        assert_eq!(good.status, Status::Ok, "{good:?}");

        let mut open_key = cloud_facts(enabled());
        open_key.key_file = Some(KeyFile::Present {
            mode: 0o644,
            empty: false,
        });
        let check = cloud(&open_key, &stopped());
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.fix.as_deref(),
            Some("chmod 600 /etc/ab/cloud-api-key")
        );

        let mut from_env = open_key;
        from_env.env_key = true;
        assert_eq!(
            cloud(&from_env, &stopped()).status,
            Status::Ok,
            "the environment's key wins over the file"
        );

        let mut missing = cloud_facts(enabled());
        missing.key_file = Some(KeyFile::Missing);
        let check = cloud(&missing, &stopped());
        assert_eq!(check.fix.as_deref(), Some("atlasbridge cloud setup"));

        let mut no_channel = cloud_facts(enabled());
        no_channel.channel_enabled = false;
        assert_eq!(cloud(&no_channel, &stopped()).status, Status::Warn);

        let mut connected = cloud_facts(enabled());
        connected.running = cloud_state("connected", None);
        assert_eq!(cloud(&connected, &running()).status, Status::Ok);
        connected.running = cloud_state("reconnecting", Some("network"));
        assert_eq!(cloud(&connected, &running()).status, Status::Warn);
        connected.running = cloud_state("disconnected", Some("auth_failed"));
        assert_eq!(cloud(&connected, &running()).status, Status::Fail);
        connected.running = cloud_state("disabled", None);
        assert_eq!(cloud(&connected, &running()).status, Status::Warn);
    }

    #[test]
    fn paths_are_quoted_only_when_they_need_it() {
        assert_eq!(shell_quote(Path::new("/a/b-c_d.key")), "/a/b-c_d.key");
        assert_eq!(shell_quote(Path::new("/a b/c")), "'/a b/c'");
        assert_eq!(shell_quote(Path::new("/it's")), r"'/it'\''s'");
    }

    #[test]
    fn sizes_read_like_df() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(100 << 20), "100 MiB");
        assert_eq!(bytes(1 << 30), "1 GiB");
    }
}
