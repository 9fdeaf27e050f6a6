//! `service install --system` (Linux, as root): the setup of the threat model's system mode. The
//! daemon runs as its own account (`atlasbridge`), which alone owns the data directory and the
//! keys; agents' accounts reach it only through the socket, as members of the socket's group,
//! with the role the config grants each of them.
//!
//! User and group existence is read from `<root>/etc/passwd` and `<root>/etc/group`, so that
//! `--root` (an image being built) sees its own accounts, not the host's; the changes are made
//! with the shadow tools (`groupadd`, `useradd`, `usermod`), which take the same `--root`.

use std::path::{Path, PathBuf};

use super::{CliError, Plan, units};

/// Roles an agent may be granted (the owner is the daemon's own account).
const GRANTABLE_ROLES: [&str; 3] = ["viewer", "operator", "admin"];

/// What `--system` was asked to set up.
#[derive(Debug, Clone)]
pub(super) struct SystemInstallation {
    /// The daemon binary, absolute.
    pub daemon: PathBuf,
    /// The group whose members may open the socket.
    pub socket_group: String,
    /// Agent accounts and their roles (`--agent USER[=ROLE]`).
    pub agents: Vec<(String, String)>,
    /// Where the system's files are (`/` unless `--root`).
    pub root: Option<PathBuf>,
    /// Check but do not require root (a dry run changes nothing).
    pub dry_run: bool,
}

/// `USER` or `USER=ROLE` (role `operator` by default).
pub(super) fn parse_agent(text: &str) -> Result<(String, String), String> {
    let (user, role) = text.split_once('=').unwrap_or((text, "operator"));
    if user.is_empty() || user.contains([':', '\n', ' ', '/']) {
        return Err(format!("--agent {text:?}: not a user name"));
    }
    if !GRANTABLE_ROLES.contains(&role) {
        return Err(format!(
            "--agent {text:?}: the role must be one of {}",
            GRANTABLE_ROLES.join(", ")
        ));
    }
    Ok((user.to_owned(), role.to_owned()))
}

impl SystemInstallation {
    fn path(&self, absolute: &str) -> PathBuf {
        match &self.root {
            Some(root) => root.join(absolute.trim_start_matches('/')),
            None => PathBuf::from(absolute),
        }
    }

    /// `--root DIR` for the tools that take it.
    fn root_args(&self) -> Vec<String> {
        self.root
            .as_ref()
            .map(|root| vec!["--root".to_owned(), root.display().to_string()])
            .unwrap_or_default()
    }

    fn unit_path(&self) -> PathBuf {
        self.path("/etc/systemd/system")
            .join(units::SYSTEMD_UNIT_NAME)
    }
}

/// The accounts of `<root>/etc/passwd` or groups of `<root>/etc/group`: name → the fourth field
/// (group members, comma-separated) for groups.
fn database(path: &Path) -> Result<Vec<(String, String)>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let name = fields.first()?.trim();
            (!name.is_empty()).then(|| {
                (
                    name.to_owned(),
                    fields.get(3).copied().unwrap_or("").to_owned(),
                )
            })
        })
        .collect())
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        rustix::process::geteuid().is_root()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

#[cfg(not(unix))]
fn check_binary_is_root_owned(_daemon: &Path) -> Result<(), String> {
    Ok(())
}

/// Refuses a daemon binary that anyone but root could replace: the service would run it.
#[cfg(unix)]
fn check_binary_is_root_owned(daemon: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut path = Some(daemon);
    while let Some(current) = path {
        let meta = std::fs::metadata(current)
            .map_err(|e| format!("cannot inspect {}: {e}", current.display()))?;
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        if meta.uid() != 0 || (meta.mode() & 0o022 != 0 && !sticky_dir) {
            return Err(format!(
                "{} is owned by uid {} with mode {:04o}: someone other than root could replace \
                 the daemon the service runs; install it first, e.g. \
                 `install -o root -g root -m 0755 {} /usr/local/bin/`, and pass --daemon \
                 /usr/local/bin/atlasbridged",
                current.display(),
                meta.uid(),
                meta.mode() & 0o7777,
                daemon.display()
            ));
        }
        path = current.parent();
    }
    Ok(())
}

pub(super) fn install_plan(
    installation: &SystemInstallation,
    start: bool,
) -> Result<Plan, CliError> {
    if !installation.dry_run && !is_root() {
        return Err(CliError::Failed(
            "--system changes accounts and system files: run it as root (sudo), or add \
             --dry-run to see what it would do"
                .to_owned(),
        ));
    }
    let mut plan = Plan::default();
    if let Err(problem) = check_binary_is_root_owned(&installation.daemon) {
        if installation.dry_run {
            plan.notes.push(format!("would refuse: {problem}"));
        } else {
            return Err(CliError::Failed(problem));
        }
    }
    let unit_daemon = units::systemd_path(&installation.daemon)
        .map_err(|e| CliError::Failed(format!("cannot write a systemd unit: {e}")))?;
    let users = database(&installation.path("/etc/passwd"))?;
    let groups = database(&installation.path("/etc/group"))?;
    let root_args = installation.root_args();
    let with_root = |words: &[&str]| -> Vec<String> {
        let mut command: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        command.splice(1..1, root_args.iter().cloned());
        command
    };

    let group = installation.socket_group.as_str();
    let group_members: Option<Vec<String>> = groups
        .iter()
        .find(|(name, _)| name == group)
        .map(|(_, members)| members.split(',').map(str::to_owned).collect());
    if group_members.is_none() {
        plan.commands
            .push(with_root(&["groupadd", "--system", group]));
    }
    if !users.iter().any(|(name, _)| name == units::SYSTEM_USER) {
        plan.commands.push(with_root(&[
            "useradd",
            "--system",
            "--user-group",
            "--home-dir",
            units::SYSTEM_DATA_DIR,
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "AtlasBridge governance daemon",
            units::SYSTEM_USER,
        ]));
    }
    for (agent, _) in &installation.agents {
        if agent == units::SYSTEM_USER {
            return Err(CliError::Failed(format!(
                "--agent {agent}: the daemon's own account cannot be an agent"
            )));
        }
        if !users.iter().any(|(name, _)| name == agent) {
            return Err(CliError::Failed(format!(
                "--agent {agent}: no such user in {}",
                installation.path("/etc/passwd").display()
            )));
        }
        let member = group_members
            .as_ref()
            .is_some_and(|members| members.iter().any(|m| m == agent));
        if !member {
            plan.commands.push(with_root(&[
                "usermod", "--append", "--groups", group, agent,
            ]));
        }
    }

    let config_path = installation.path(units::SYSTEM_CONFIG);
    let config = units::system_config(group, &installation.agents, &[]);
    match std::fs::read_to_string(&config_path) {
        Ok(existing) if existing == config => {}
        Ok(_) => plan.notes.push(format!(
            "kept the existing {}: make sure it turns rbac on and grants the agents their \
             roles, as this would:\n{config}",
            config_path.display()
        )),
        Err(_) => {
            if let Some(parent) = config_path.parent() {
                plan.directory(parent, 0o755);
            }
            plan.file(config_path.clone(), 0o644, config);
        }
    }
    let unit_path = installation.unit_path();
    if let Some(parent) = unit_path.parent() {
        plan.directory(parent, 0o755);
    }
    plan.file(
        unit_path.clone(),
        0o644,
        units::systemd_system_unit(&unit_daemon, group),
    );
    match &installation.root {
        // An image being built: enable it there; it starts when that system boots.
        Some(root) => plan.commands.push(vec![
            "systemctl".to_owned(),
            format!("--root={}", root.display()),
            "enable".to_owned(),
            units::SYSTEMD_UNIT_NAME.to_owned(),
        ]),
        None => {
            plan.command(&["systemctl", "daemon-reload"]);
            if start {
                plan.command(&["systemctl", "enable", "--now", units::SYSTEMD_UNIT_NAME]);
            } else {
                plan.command(&["systemctl", "enable", units::SYSTEMD_UNIT_NAME]);
            }
        }
    }
    plan.notes.extend([
        format!(
            "wrote {}: atlasbridged runs as the {} account, which alone can read its data \
             ({}) and keys",
            unit_path.display(),
            units::SYSTEM_USER,
            units::SYSTEM_DATA_DIR
        ),
        format!(
            "agents connect to {} (export ATLASBRIDGE_SOCKET={}) as members of {group}; \
             a new member's group applies from their next login",
            units::SYSTEM_SOCKET,
            units::SYSTEM_SOCKET
        ),
        "roles: /etc/atlasbridge/config.toml [roles.users]; after editing it: systemctl reload \
         atlasbridged"
            .to_owned(),
        "logs: journalctl -u atlasbridged".to_owned(),
    ]);
    Ok(plan)
}

pub(super) fn uninstall_plan(installation: &SystemInstallation) -> Result<Plan, CliError> {
    if !installation.dry_run && !is_root() {
        return Err(CliError::Failed(
            "--system changes system files: run it as root (sudo)".to_owned(),
        ));
    }
    let mut plan = Plan::default();
    let unit_path = installation.unit_path();
    let disable = match &installation.root {
        Some(root) => vec![
            "systemctl".to_owned(),
            format!("--root={}", root.display()),
            "disable".to_owned(),
            units::SYSTEMD_UNIT_NAME.to_owned(),
        ],
        None => ["systemctl", "disable", "--now", units::SYSTEMD_UNIT_NAME]
            .map(str::to_owned)
            .to_vec(),
    };
    // Disabling what is not enabled fails harmlessly.
    plan.tolerated.push(plan.commands.len());
    plan.commands.push(disable);
    plan.remove.push(unit_path.clone());
    if installation.root.is_none() {
        plan.command(&["systemctl", "daemon-reload"]);
    }
    plan.notes = vec![
        format!("removed {}", unit_path.display()),
        format!(
            "kept the {} account, the {} group, {} (config) and {} (the trace and keys): \
             remove them yourself once you have what you need (userdel {}; groupdel {}; \
             rm -r {})",
            units::SYSTEM_USER,
            installation.socket_group,
            units::SYSTEM_CONFIG,
            units::SYSTEM_DATA_DIR,
            units::SYSTEM_USER,
            installation.socket_group,
            units::SYSTEM_DATA_DIR
        ),
    ];
    Ok(plan)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn agents_are_users_with_an_optional_grantable_role() {
        assert_eq!(
            parse_agent("alice").unwrap(),
            ("alice".to_owned(), "operator".to_owned())
        );
        assert_eq!(
            parse_agent("ci=viewer").unwrap(),
            ("ci".to_owned(), "viewer".to_owned())
        );
        assert!(
            parse_agent("bob=owner")
                .unwrap_err()
                .contains("viewer, operator, admin")
        );
        assert!(parse_agent("=operator").is_err());
        assert!(parse_agent("a:b").is_err());
    }

    #[test]
    fn the_account_databases_are_read_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("group");
        std::fs::write(&group, "root:x:0:\n# comment\nagents:x:990:alice,bob\n").unwrap();
        let entries = database(&group).unwrap();
        assert_eq!(
            entries,
            vec![
                ("root".to_owned(), String::new()),
                ("agents".to_owned(), "alice,bob".to_owned())
            ]
        );
        assert!(database(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn a_binary_others_can_replace_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = dir.path().join("atlasbridged");
        std::fs::write(&daemon, "").unwrap();
        std::fs::set_permissions(&daemon, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let problem = check_binary_is_root_owned(&daemon).unwrap_err();
        assert!(problem.contains("install -o root"), "{problem}");
    }
}
