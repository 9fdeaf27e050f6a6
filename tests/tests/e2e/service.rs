//! Running as a service: `atlasbridge service install|uninstall|status` and the daemon's side of
//! systemd's readiness protocol (`NOTIFY_SOCKET`, `WATCHDOG_USEC`).
//!
//! No service manager runs in the test environment: `systemctl` is replaced by a script on PATH
//! that records its arguments, and the generated unit is checked by `systemd-analyze verify`
//! where that tool exists.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use crate::support::{DAEMON, Options, Sandbox, TestDaemon};

/// A stopped daemon's sandbox, for CLI runs that need no daemon.
fn sandbox_cli() -> TestDaemon {
    TestDaemon::unstarted(Sandbox::new(), Options::default())
}

/// A `systemctl` that appends its arguments to `calls` and fails when `fail_on` is one of them.
fn fake_systemctl(daemon: &TestDaemon, fail_on: Option<&str>) -> (String, std::path::PathBuf) {
    let bin = daemon.sandbox.path("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = daemon.sandbox.path("systemctl-calls");
    let fail = fail_on.map_or(String::new(), |word| {
        format!(
            "for a in \"$@\"; do [ \"$a\" = {word} ] && {{ echo 'Failed to connect to bus' >&2; exit 1; }}; done\n"
        )
    });
    let script = bin.join("systemctl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\n{fail}exit 0\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    (path, calls)
}

/// `systemd-analyze verify` (with `--user` for a user unit) accepts `unit`, saved in the
/// sandbox under the unit's own name.
fn assert_systemd_accepts(daemon: &TestDaemon, unit: &str, user: bool) {
    let file = daemon.sandbox.path("verify/atlasbridged.service");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, unit).unwrap();
    let mut verify = Command::new("systemd-analyze");
    if user {
        // `--user` needs a runtime directory to build its manager from.
        let runtime = daemon.sandbox.path("xdg-run");
        std::fs::create_dir_all(&runtime).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        verify.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
    }
    let verify = verify.arg("verify").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !stderr.contains("atlasbridged.service"),
        "systemd-analyze verify (user: {user}): {}\n{stderr}",
        verify.status
    );
}

#[test]
fn install_dry_run_prints_the_unit_and_the_commands_and_writes_nothing() {
    let daemon = sandbox_cli();
    let out = daemon.cli(&["service", "install", "--dry-run", "--daemon", DAEMON]);
    out.assert_code(0);
    let daemon_path = std::fs::canonicalize(DAEMON).unwrap();
    assert!(
        out.stdout
            .contains(&format!("ExecStart={}\n", daemon_path.display())),
        "{}",
        out.stdout
    );
    let data_dir = daemon.sandbox.data_dir();
    assert!(
        out.stdout
            .contains(&format!("ReadWritePaths={}\n", data_dir.display())),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Type=notify\n"));
    assert!(out.stdout.contains("\nsystemctl --user daemon-reload\n"));
    assert!(
        out.stdout
            .contains("\nsystemctl --user enable --now atlasbridged.service\n")
    );
    let unit = daemon
        .sandbox
        .path("xdg-config/systemd/user/atlasbridged.service");
    assert!(out.stdout.contains(&format!("# write {}", unit.display())));
    assert!(!unit.exists(), "a dry run wrote {}", unit.display());
}

#[test]
fn the_generated_unit_passes_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    let daemon = sandbox_cli();
    let out = daemon.cli(&[
        "--json",
        "service",
        "install",
        "--dry-run",
        "--daemon",
        DAEMON,
    ]);
    out.assert_code(0);
    let plan = out.json();
    let unit = plan["files"][0]["content"].as_str().unwrap();
    assert_systemd_accepts(&daemon, unit, true);
}

#[test]
fn install_writes_the_unit_and_enables_it_then_uninstall_removes_it() {
    let daemon = sandbox_cli();
    let (path, calls) = fake_systemctl(&daemon, None);
    let out = daemon.cli_with(
        &["service", "install", "--daemon", DAEMON],
        &[("PATH", &path)],
    );
    out.assert_code(0);
    assert!(out.stdout.contains("journalctl --user -u atlasbridged"));
    let unit = daemon
        .sandbox
        .path("xdg-config/systemd/user/atlasbridged.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart=/"));
    assert_eq!(
        std::fs::metadata(&unit).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // The data directory exists (0700) before the sandbox needs it.
    let data = std::fs::metadata(daemon.sandbox.data_dir()).unwrap();
    assert_eq!(data.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "--user daemon-reload\n--user enable --now atlasbridged.service\n"
    );

    // Installing again replaces the file in place.
    daemon
        .cli_with(
            &["service", "install", "--daemon", DAEMON],
            &[("PATH", &path)],
        )
        .assert_code(0);

    let out = daemon.cli_with(&["service", "uninstall"], &[("PATH", &path)]);
    out.assert_code(0);
    assert!(!unit.exists());
    assert!(daemon.sandbox.data_dir().exists(), "the data must stay");
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        log.ends_with("--user disable --now atlasbridged.service\n--user daemon-reload\n"),
        "{log}"
    );
}

#[test]
fn install_without_start_only_enables() {
    let daemon = sandbox_cli();
    let (path, calls) = fake_systemctl(&daemon, None);
    daemon
        .cli_with(
            &["service", "install", "--no-start", "--daemon", DAEMON],
            &[("PATH", &path)],
        )
        .assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "--user daemon-reload\n--user enable atlasbridged.service\n"
    );
}

#[test]
fn a_failing_service_manager_is_reported_with_its_message() {
    let daemon = sandbox_cli();
    let (path, _) = fake_systemctl(&daemon, Some("enable"));
    let out = daemon.cli_with(
        &["service", "install", "--daemon", DAEMON],
        &[("PATH", &path)],
    );
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("systemctl --user enable --now atlasbridged.service")
            && out.stderr.contains("Failed to connect to bus"),
        "{}",
        out.stderr
    );
    // Uninstalling what was never enabled is not an error (the disable failure is expected).
    let (path, _) = fake_systemctl(&daemon, Some("disable"));
    daemon
        .cli_with(&["service", "uninstall"], &[("PATH", &path)])
        .assert_code(0);
}

#[test]
fn bad_requests_say_what_to_do() {
    let daemon = sandbox_cli();
    let out = daemon.cli(&[
        "service",
        "install",
        "--daemon",
        "/nonexistent/atlasbridged",
    ]);
    out.assert_code(1);
    assert!(out.stderr.contains("--daemon PATH"), "{}", out.stderr);
    let out = daemon.cli(&[
        "service",
        "install",
        "--system",
        "--dry-run",
        "--agent",
        "x=owner",
        "--daemon",
        DAEMON,
    ]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("viewer, operator, admin"),
        "{}",
        out.stderr
    );
    // The system options need --system.
    daemon
        .cli(&["service", "install", "--dry-run", "--agent", "alice"])
        .assert_code(2);
}

/// A system root in the sandbox with `alice` and `bob` but neither the daemon's account nor
/// the socket group, and fake shadow tools and systemctl recording their arguments.
fn system_root(daemon: &TestDaemon) -> (std::path::PathBuf, String, std::path::PathBuf) {
    let root = daemon.sandbox.path("sysroot");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\nbob:x:1002:1002::/home/bob:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nalice:x:1001:\n").unwrap();
    let (path, calls) = fake_systemctl(daemon, None);
    let bin = daemon.sandbox.path("fake-bin");
    for tool in ["groupadd", "useradd", "usermod"] {
        let script = bin.join(tool);
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho {tool} \"$@\" >> {}\n", calls.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (root, path, calls)
}

#[test]
fn system_install_dry_run_shows_accounts_config_and_a_hardened_unit() {
    let daemon = sandbox_cli();
    let (root, path, calls) = system_root(&daemon);
    let root_text = root.display().to_string();
    let out = daemon.cli_with(
        &[
            "--json",
            "service",
            "install",
            "--system",
            "--dry-run",
            "--root",
            &root_text,
            "--agent",
            "alice",
            "--agent",
            "bob=viewer",
            "--daemon",
            DAEMON,
        ],
        &[("PATH", &path)],
    );
    out.assert_code(0);
    let plan = out.json();
    let commands: Vec<String> = plan["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c.as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        commands,
        vec![
            format!("groupadd --root {root_text} --system atlasbridge-agents"),
            format!(
                "useradd --root {root_text} --system --user-group --home-dir /var/lib/atlasbridge \
                 --no-create-home --shell /usr/sbin/nologin --comment AtlasBridge governance daemon \
                 atlasbridge"
            ),
            format!("usermod --root {root_text} --append --groups atlasbridge-agents alice"),
            format!("usermod --root {root_text} --append --groups atlasbridge-agents bob"),
            format!("systemctl --root={root_text} enable atlasbridged.service"),
        ]
    );
    let files = plan["files"].as_array().unwrap();
    let config = &files[0];
    assert_eq!(
        config["path"],
        root.join("etc/atlasbridge/config.toml")
            .display()
            .to_string()
    );
    let config_text = config["content"].as_str().unwrap();
    assert!(config_text.contains("rbac = true"));
    assert!(config_text.contains("socket_group = \"atlasbridge-agents\""));
    assert!(
        config_text.contains("[roles.users]\n\"alice\" = \"operator\"\n\"bob\" = \"viewer\"\n")
    );
    let unit = files[1]["content"].as_str().unwrap();
    for line in [
        "User=atlasbridge\n",
        "SupplementaryGroups=atlasbridge-agents\n",
        "Environment=ATLASBRIDGE_SOCKET=/run/atlasbridge/atlasbridged.sock\n",
        "StateDirectoryMode=0700\n",
        "RuntimeDirectoryMode=0750\n",
        "ProtectHome=yes\n",
        "CapabilityBoundingSet=\n",
        "WantedBy=multi-user.target\n",
    ] {
        assert!(unit.contains(line), "{line:?} missing from\n{unit}");
    }
    assert!(!root.join("etc/systemd").exists(), "a dry run wrote files");
    assert!(!calls.exists(), "a dry run ran commands");

    // Unknown agents are refused before anything happens.
    let out = daemon.cli_with(
        &[
            "service",
            "install",
            "--system",
            "--dry-run",
            "--root",
            &root_text,
            "--agent",
            "mallory",
            "--daemon",
            DAEMON,
        ],
        &[("PATH", &path)],
    );
    out.assert_code(1);
    assert!(
        out.stderr.contains("--agent mallory: no such user"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_generated_system_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let daemon = sandbox_cli();
    let (root, path, _) = system_root(&daemon);
    let out = daemon.cli_with(
        &[
            "--json",
            "service",
            "install",
            "--system",
            "--dry-run",
            "--root",
            &root.display().to_string(),
            "--daemon",
            DAEMON,
        ],
        &[("PATH", &path)],
    );
    out.assert_code(0);
    let unit = out.json()["files"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_systemd_accepts(&daemon, &unit, false);
}

#[test]
fn system_install_into_a_root_writes_the_files_and_runs_the_tools() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: --system needs root");
        return;
    }
    let daemon = sandbox_cli();
    let (root, path, calls) = system_root(&daemon);
    let root_text = root.display().to_string();
    let out = daemon.cli_with(
        &[
            "service", "install", "--system", "--root", &root_text, "--agent", "alice", "--daemon",
            DAEMON,
        ],
        &[("PATH", &path)],
    );
    if out.code == 1 && out.stderr.contains("someone other than root could replace") {
        eprintln!(
            "skipped: the test binaries are not root-owned here: {}",
            out.stderr
        );
        return;
    }
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("ATLASBRIDGE_SOCKET=/run/atlasbridge/atlasbridged.sock")
    );
    let config = root.join("etc/atlasbridge/config.toml");
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("\"alice\" = \"operator\"")
    );
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let unit = root.join("etc/systemd/system/atlasbridged.service");
    assert!(
        std::fs::read_to_string(&unit)
            .unwrap()
            .contains("User=atlasbridge")
    );
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        log.starts_with(&format!(
            "groupadd --root {root_text} --system atlasbridge-agents\n"
        )),
        "{log}"
    );
    assert!(
        log.ends_with(&format!("--root={root_text} enable atlasbridged.service\n")),
        "{log}"
    );

    // A changed config is kept, and the note says what to merge.
    std::fs::write(&config, "# mine\n").unwrap();
    let out = daemon.cli_with(
        &[
            "service", "install", "--system", "--root", &root_text, "--agent", "alice", "--daemon",
            DAEMON,
        ],
        &[("PATH", &path)],
    );
    out.assert_code(0);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
    assert!(out.stdout.contains("kept the existing"), "{}", out.stdout);

    let out = daemon.cli_with(
        &["service", "uninstall", "--system", "--root", &root_text],
        &[("PATH", &path)],
    );
    out.assert_code(0);
    assert!(!unit.exists());
    assert!(config.exists(), "the config stays");
    assert!(out.stdout.contains("userdel atlasbridge"), "{}", out.stdout);
}

#[test]
fn status_reports_the_file_the_manager_and_the_socket() {
    let mut daemon = sandbox_cli();
    let (path, _) = fake_systemctl(&daemon, None);
    let out = daemon.cli_with(&["--json", "service", "status"], &[("PATH", &path)]);
    out.assert_code(0);
    let status = out.json();
    assert_eq!(status["installed"], false);
    assert_eq!(status["answering"], false);
    daemon
        .cli_with(
            &["service", "install", "--daemon", DAEMON],
            &[("PATH", &path)],
        )
        .assert_code(0);
    daemon.launch();
    let status = daemon
        .cli_with(&["--json", "service", "status"], &[("PATH", &path)])
        .json();
    assert_eq!(status["installed"], true);
    assert_eq!(status["answering"], true);
}

/// A datagram socket standing in for systemd's notification socket.
fn notify_socket(sandbox: &Sandbox) -> (UnixDatagram, std::path::PathBuf) {
    let path = sandbox.path("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (socket, path)
}

fn next_message(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let n = socket.recv(&mut buffer).expect("a notification in time");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[test]
fn the_daemon_tells_the_service_manager_when_it_is_ready_reloading_and_stopping() {
    let sandbox = Sandbox::new();
    let (manager, path) = notify_socket(&sandbox);
    let path = path.display().to_string();
    let mut daemon = TestDaemon::start_in(sandbox, Options::default().env("NOTIFY_SOCKET", &path));
    let ready = next_message(&manager);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", daemon.pid())),
        "{ready}"
    );
    assert!(
        ready.contains(&format!(
            "STATUS=listening on {}",
            daemon.socket().display()
        )),
        "{ready}"
    );
    daemon.signal(rustix::process::Signal::HUP);
    assert_eq!(next_message(&manager), "RELOADING=1");
    assert_eq!(
        next_message(&manager),
        format!("READY=1\nMAINPID={}\nSTATUS=reloaded", daemon.pid())
    );
    daemon.signal(rustix::process::Signal::TERM);
    let stopping = next_message(&manager);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    daemon.wait_exit(Duration::from_secs(20));
}

#[test]
fn the_daemon_pings_the_watchdog_at_half_its_interval() {
    let sandbox = Sandbox::new();
    let (manager, path) = notify_socket(&sandbox);
    let path = path.display().to_string();
    let daemon = TestDaemon::start_in(
        sandbox,
        Options::default()
            .env("NOTIFY_SOCKET", &path)
            // 2 s: a ping every second.
            .env("WATCHDOG_USEC", "2000000"),
    );
    assert!(next_message(&manager).starts_with("READY=1"));
    let mut pings = 0;
    while pings < 2 {
        let message = next_message(&manager);
        assert_eq!(message, "WATCHDOG=1");
        pings += 1;
    }
    drop(daemon);
}

#[test]
fn without_a_notify_socket_the_daemon_runs_as_before() {
    // A NOTIFY_SOCKET that cannot be used is logged, not fatal.
    let daemon = TestDaemon::start_with(Options::default().env("NOTIFY_SOCKET", "relative/x"));
    assert!(
        daemon.log().contains("cannot use NOTIFY_SOCKET"),
        "{}",
        daemon.log()
    );
}
