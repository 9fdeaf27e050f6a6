//! Local roles with real second users: a group and two users are created for each test (as
//! root, with useradd), the daemon grants the first `operator` by name and nothing to the
//! second, and the CLI runs as each of them. The kernel's peer credentials decide, the socket's
//! group and mode decide who may connect at all, and every refusal is an audit event.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde_json::Value;

use crate::support::{CLI, CliOutput, Options, Sandbox, TestDaemon, eventually, is_root};

/// useradd and groupadd lock /etc/passwd and /etc/group: the tests of this binary take turns.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// The uid of `nobody` on Linux: in no group of ours.
const OUTSIDER: u32 = 65534;

/// A system tool, also where `PATH` does not reach (`/usr/sbin` for a plain user's `PATH`).
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[derive(Debug, Clone)]
struct User {
    name: String,
    uid: u32,
    /// Its passwd group (a group of its own).
    gid: u32,
}

/// A group and two users, both in the group, removed again when dropped (also when the test
/// fails). Names are unique per process and test, and short (useradd allows 32 bytes).
#[derive(Debug)]
struct Accounts {
    group: String,
    gid: u32,
    /// Granted `operator` by name.
    operator: User,
    /// Granted nothing.
    other: User,
    users: Vec<String>,
    groups: Vec<String>,
}

impl Accounts {
    /// `None` (and a note) when this run cannot create users.
    fn create(tag: &str) -> Option<Self> {
        if !is_root() || tool("useradd").is_none() {
            eprintln!("skipped: needs root and useradd to create a second user");
            return None;
        }
        let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let base = format!("abr{}{tag}", std::process::id());
        let mut accounts = Self {
            group: format!("{base}g"),
            gid: 0,
            operator: User {
                name: format!("{base}o"),
                uid: 0,
                gid: 0,
            },
            other: User {
                name: format!("{base}n"),
                uid: 0,
                gid: 0,
            },
            users: Vec::new(),
            groups: Vec::new(),
        };
        // Recorded before each is created, so that a failure half way still cleans up.
        accounts.groups.push(accounts.group.clone());
        run_tool("groupadd", &[&accounts.group]);
        accounts.gid = group_id(&accounts.group);
        let shell = ["/usr/sbin/nologin", "/sbin/nologin"]
            .into_iter()
            .find(|s| Path::new(s).exists())
            .unwrap_or("/bin/false");
        for user in [&mut accounts.operator, &mut accounts.other] {
            accounts.users.push(user.name.clone());
            // Its own group too (userdel removes it; Drop makes sure).
            accounts.groups.insert(0, user.name.clone());
            run_tool(
                "useradd",
                &[
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    shell,
                    "--user-group",
                    "--groups",
                    &accounts.group,
                    &user.name,
                ],
            );
            let entry = getent("passwd", &user.name);
            user.uid = entry[2].parse().unwrap();
            user.gid = entry[3].parse().unwrap();
        }
        assert_ne!(accounts.operator.gid, accounts.gid);
        Some(accounts)
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        for user in &self.users {
            quietly("userdel", user);
        }
        for group in &self.groups {
            quietly("groupdel", group);
        }
    }
}

fn run_tool(name: &str, args: &[&str]) {
    let program = tool(name).unwrap_or_else(|| panic!("{name} not found"));
    let output = Command::new(&program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Cleanup: a group already gone with its user is fine.
fn quietly(name: &str, arg: &str) {
    if let Some(program) = tool(name) {
        let _ = Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn getent(database: &str, key: &str) -> Vec<String> {
    let output = Command::new(tool("getent").expect("getent"))
        .args([database, key])
        .output()
        .unwrap();
    assert!(output.status.success(), "getent {database} {key}");
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .split(':')
        .map(str::to_owned)
        .collect()
}

fn group_id(name: &str) -> u32 {
    getent("group", name)[2].parse().unwrap()
}

/// The CLI at a path other users may run: the build's own when every directory above it is
/// searchable and the file executable by others, else a copy in the sandbox.
fn cli_for_others(sandbox: &Sandbox) -> PathBuf {
    let cli = Path::new(CLI);
    let others_may =
        |path: &Path, bits: u32| std::fs::metadata(path).is_ok_and(|m| m.mode() & bits == bits);
    if others_may(cli, 0o005) && cli.ancestors().skip(1).all(|dir| others_may(dir, 0o001)) {
        return cli.to_path_buf();
    }
    let copy = sandbox.path("atlasbridge");
    std::fs::copy(cli, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// Runs the CLI (with `--socket` and `--json`) as `uid` with effective gid `gid` and
/// supplementary groups `groups`. setpriv sets all three; without it, std sets the uid and the
/// gid only, so the first of `groups` becomes the effective gid (to keep access to the socket).
/// The CLI was refused with -32007, saying `expected`.
#[track_caller]
fn assert_permission_denied(out: &CliOutput, expected: &str) {
    out.assert_code(1);
    let error = &out.json()["error"];
    assert_eq!(error["code"], -32007, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains(expected),
        "{error}"
    );
}

fn cli_as(
    daemon: &TestDaemon,
    cli: &Path,
    (uid, gid, groups): (u32, u32, &[u32]),
    args: &[&str],
) -> CliOutput {
    let mut command = match tool("setpriv") {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"));
            if groups.is_empty() {
                command.arg("--clear-groups");
            } else {
                let list: Vec<_> = groups.iter().map(u32::to_string).collect();
                command.arg(format!("--groups={}", list.join(",")));
            }
            command.arg("--").arg(cli);
            command
        }
        None => {
            let mut command = Command::new(cli);
            command.uid(uid).gid(groups.first().copied().unwrap_or(gid));
            command
        }
    };
    let output = command
        .env_clear()
        .envs(daemon.env())
        .current_dir("/")
        .arg("--socket")
        .arg(daemon.socket())
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    CliOutput::from(output)
}

fn audited(daemon: &TestDaemon, event_type: &str) -> Vec<Value> {
    daemon
        .audit_events()
        .into_iter()
        .filter(|e| e["event_type"] == event_type)
        .collect()
}

/// A daemon in a sandbox other users may traverse (0711: no listing), with `config`.
fn start(config: &str) -> TestDaemon {
    let sandbox = Sandbox::new();
    std::fs::set_permissions(sandbox.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
    TestDaemon::start_in(sandbox, Options::default().config(config))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn other_users_get_the_role_granted_to_them_and_nothing_more() {
    let Some(accounts) = Accounts::create("r") else {
        return;
    };
    let operator = accounts.operator.clone();
    let other = accounts.other.clone();
    let group = accounts.group.clone();
    let config = format!(
        "[features]\nrbac = true\n\n[roles]\nsocket_group = \"{group}\"\n\n[roles.users]\n{} = \"operator\"\n",
        operator.name
    );
    let mut daemon = start(&config);

    // Members of the group may open the socket; the directory is listable by them only.
    let socket = daemon.socket();
    let dir = socket.parent().unwrap().to_path_buf();
    assert_eq!(mode(&socket), 0o660);
    assert_eq!(std::fs::metadata(&socket).unwrap().gid(), accounts.gid);
    assert_eq!(mode(&dir), 0o750);
    assert_eq!(std::fs::metadata(&dir).unwrap().gid(), accounts.gid);
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), 0);

    let cli = cli_for_others(&daemon.sandbox);
    let as_operator = (
        operator.uid,
        operator.gid,
        &[operator.gid, accounts.gid][..],
    );
    let as_other = (other.uid, other.gid, &[other.gid, accounts.gid][..]);

    // The operator reads and decides…
    let status = cli_as(&daemon, &cli, as_operator, &["status"]);
    status.assert_code(0);
    assert_eq!(status.json()["pid"], daemon.pid());
    assert_eq!(
        status.json()["role"],
        "operator",
        "daemon.status says whose role"
    );
    let decided = cli_as(
        &daemon,
        &cli,
        as_operator,
        &[
            "decide",
            "--session",
            "roles-1",
            "--prompt",
            "Continue? [y/n]",
        ],
    );
    assert!(
        matches!(decided.code, 0 | 10),
        "decide: {}\n{}",
        decided.stdout,
        decided.stderr
    );

    // …but may not pull the kill switch (an admin's act).
    let paused = cli_as(&daemon, &cli, as_operator, &["autopilot", "pause"]);
    paused.assert_code(1);
    let error = &paused.json()["error"];
    assert_eq!(error["code"], -32007, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("autopilot.pause needs the admin role; you are operator"),
        "{error}"
    );
    eventually("the method refusal is audited", || {
        !audited(&daemon, "permission_denied").is_empty()
    });
    let denied = audited(&daemon, "permission_denied");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["actor"]["uid"], operator.uid);
    assert!(denied[0]["actor"]["pid"].as_i64().is_some_and(|p| p > 0));
    assert_eq!(denied[0]["details"]["method"], "autopilot.pause");
    assert_eq!(denied[0]["details"]["role"], "operator");
    assert_eq!(denied[0]["details"]["required_role"], "admin");
    assert_eq!(
        daemon.conn().ok("autopilot.status", serde_json::json!({}))["state"],
        "running"
    );

    // A uid outside the group cannot even open the socket: the kernel refuses it, so the
    // daemon never sees it.
    let outsider = cli_as(&daemon, &cli, (OUTSIDER, OUTSIDER, &[]), &["status"]);
    assert_eq!(outsider.code, 2, "{}\n{}", outsider.stdout, outsider.stderr);
    assert!(
        outsider.stderr.contains("Permission denied"),
        "{}",
        outsider.stderr
    );

    // The other member may open the socket, but has no role: refused at connect.
    let refused = cli_as(&daemon, &cli, as_other, &["status"]);
    assert_permission_denied(
        &refused,
        &format!("uid {} has no role on this daemon", other.uid),
    );
    eventually("the connect refusal is audited", || {
        !audited(&daemon, "connection_refused").is_empty()
    });
    let refusals = audited(&daemon, "connection_refused");
    assert_eq!(
        refusals.len(),
        1,
        "only the member reached the daemon: {refusals:?}"
    );
    assert_eq!(refusals[0]["actor"]["uid"], other.uid);
    assert!(refusals[0]["actor"]["pid"].as_i64().is_some_and(|p| p > 0));
    assert_eq!(refusals[0]["details"]["uid"], other.uid);
    assert_eq!(refusals[0]["details"]["gid"], other.gid);
    assert!(
        refusals[0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("has no role"),
        "{refusals:?}"
    );

    // A reload grants the group `viewer`: new connections of its members get it, through a
    // supplementary group (their effective gid is their own group).
    daemon.sandbox.write(
        "config.toml",
        &format!("{config}\n[roles.groups]\n{group} = \"viewer\"\n"),
    );
    daemon.signal(rustix::process::Signal::HUP);
    eventually("the config is reloaded", || {
        daemon.log().contains("config reloaded")
    });
    let status = cli_as(&daemon, &cli, as_other, &["status"]);
    status.assert_code(0);
    assert_eq!(status.json()["role"], "viewer");
    assert!(
        daemon.log().contains(&format!(
            "uid={} role=viewer granted_by=groups.{group}",
            other.uid
        )),
        "{}",
        daemon.log()
    );
    let decided = cli_as(
        &daemon,
        &cli,
        as_other,
        &[
            "decide",
            "--session",
            "roles-2",
            "--prompt",
            "Continue? [y/n]",
        ],
    );
    decided.assert_code(1);
    assert!(
        decided.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs the operator role; you are viewer"),
        "{}",
        decided.stdout
    );
    // The operator keeps its higher grant.
    let decided = cli_as(
        &daemon,
        &cli,
        as_operator,
        &[
            "decide",
            "--session",
            "roles-3",
            "--prompt",
            "Continue? [y/n]",
        ],
    );
    assert!(matches!(decided.code, 0 | 10), "{}", decided.stderr);

    daemon.stop();
    drop(accounts);
}

#[test]
fn roles_without_the_rbac_feature_let_only_the_owner_in() {
    let Some(accounts) = Accounts::create("f") else {
        return;
    };
    let operator = accounts.operator.clone();
    // The community edition: rbac is off.
    let config = format!(
        "[roles]\nsocket_group = \"{}\"\n\n[roles.users]\n{} = \"operator\"\n",
        accounts.group, operator.name
    );
    let daemon = start(&config);
    eventually("the warning names the flag", || {
        daemon
            .log()
            .contains("[roles] is configured but not applied")
    });
    assert!(daemon.log().contains("rbac = true"), "{}", daemon.log());

    // Private as ever: the group gets nothing.
    let socket = daemon.socket();
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    assert_ne!(std::fs::metadata(&socket).unwrap().gid(), accounts.gid);

    // Even with the file modes opened by hand, the peer check lets only the owner in.
    let dir = socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let cli = cli_for_others(&daemon.sandbox);
    let refused = cli_as(
        &daemon,
        &cli,
        (operator.uid, operator.gid, &[operator.gid, accounts.gid]),
        &["status"],
    );
    assert_permission_denied(&refused, &format!("uid {} is not allowed", operator.uid));
    eventually("the refusal is audited", || {
        audited(&daemon, "connection_refused")
            .iter()
            .any(|e| e["actor"]["uid"] == operator.uid && e["details"]["roles_in_force"] == false)
    });
    drop(daemon);
    drop(accounts);
}
