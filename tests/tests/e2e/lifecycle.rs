//! Starting, refusing to start, stopping, reloading.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use rustix::process::Signal;
use serde_json::{Value, json};

use crate::support::{Conn, Options, Sandbox, TestDaemon, eventually, is_root};

#[test]
fn sigterm_while_requests_are_in_flight_answers_them_whole_and_exits_zero() {
    let mut daemon = TestDaemon::start();
    let mut conns: Vec<Conn> = (0..8).map(|_| daemon.conn()).collect();
    let mut burst = Vec::new();
    for id in 0..2000 {
        burst.extend(
            serde_json::to_vec(&json!({"jsonrpc":"2.0","id":id,"method":"features.list"})).unwrap(),
        );
        burst.push(b'\n');
    }
    for conn in &mut conns {
        conn.send_raw(&burst);
    }
    // Requests are being served on every connection when the signal arrives.
    let firsts: Vec<Value> = conns.iter_mut().map(Conn::read).collect();
    daemon.signal(Signal::TERM);

    for (conn, first) in conns.iter_mut().zip(firsts) {
        let mut replies = vec![first];
        replies.extend(conn.read_to_end());
        let mut ids: Vec<u64> = replies
            .iter()
            .map(|r| {
                assert!(
                    r["result"]["features"].is_array(),
                    "a whole, successful reply: {r}"
                );
                r["id"].as_u64().unwrap()
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), replies.len(), "no reply twice");
        assert!(ids.iter().all(|id| *id < 2000));
    }
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(
        !daemon.socket().exists(),
        "the socket file is removed on exit"
    );
}

#[test]
fn sigint_stops_the_daemon_too() {
    let mut daemon = TestDaemon::start();
    daemon.signal(Signal::INT);
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn daemon_shutdown_replies_first_then_exits() {
    let mut daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    let reply = conn.ok("daemon.shutdown", json!({}));
    assert_eq!(reply, json!({"shutting_down": true}));
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn a_second_daemon_on_the_same_socket_exits_with_a_clear_message() {
    let daemon = TestDaemon::start();
    let output = daemon.command().output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another atlasbridged is already running on"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("(pid {})", daemon.pid())),
        "{stderr}"
    );
    daemon.conn().ok("daemon.status", json!({}));
}

#[test]
fn a_stale_socket_left_by_a_killed_daemon_is_replaced() {
    let mut daemon = TestDaemon::start();
    daemon.kill();
    assert!(
        daemon.socket().exists(),
        "SIGKILL leaves the socket file behind"
    );
    assert!(
        Conn::open(&daemon.socket()).is_err(),
        "and nobody listens on it"
    );
    daemon.launch();
    daemon.conn().ok("daemon.status", json!({}));
    assert!(daemon.log().contains("replaced a stale socket"));
}

#[test]
fn a_socket_directory_writable_by_others_is_refused() {
    let sandbox = Sandbox::new();
    let dir = sandbox.socket().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let probe = TestDaemon::unstarted(sandbox, Options::default());
    let output = probe.command().output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has mode 0777"), "{stderr}");
    assert!(stderr.contains("chmod 700"), "{stderr}");
    assert!(!probe.socket().exists());
}

#[test]
fn a_bad_edition_or_config_key_stops_the_start_with_exit_78() {
    let probe = unstarted(Options::default().edition("gold"));
    let output = probe.command().output().unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown edition 'gold': expected one of community, pro, enterprise"),
        "{stderr}"
    );

    let probe = unstarted(Options::default().config("[daemon]\nidle = 3\n"));
    let output = probe.command().output().unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("config.toml:2:1: unknown field `idle`"),
        "{stderr}"
    );

    let probe = unstarted(Options::default().env("ATLASBRIDGE_FEATURE_RBAC", "maybe"));
    let output = probe.command().output().unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("ATLASBRIDGE_FEATURE_RBAC='maybe' is not a switch")
    );
}

#[test]
fn sighup_reloads_the_config_and_keeps_the_old_one_when_the_new_one_is_bad() {
    let daemon = TestDaemon::start_with(Options::default().config("edition = \"pro\"\n"));
    let config = daemon.sandbox.path("config.toml");
    let mut conn = daemon.conn();
    assert_eq!(conn.ok("edition.get", json!({}))["edition"], "pro");

    std::fs::write(&config, "edition = \"enterprise\"\n").unwrap();
    daemon.signal(Signal::HUP);
    eventually("the new edition is active", || {
        conn.ok("edition.get", json!({}))["edition"] == "enterprise"
    });

    std::fs::write(
        &config,
        "edition = \"community\"\n[features]\nnot_a_flag = true\n",
    )
    .unwrap();
    daemon.signal(Signal::HUP);
    eventually("the reload failure is logged", || {
        daemon.log().contains("config reload failed")
    });
    assert_eq!(conn.ok("edition.get", json!({}))["edition"], "enterprise");
    assert!(daemon.log().contains("unknown feature 'not_a_flag'"));
}

#[test]
fn another_users_connection_is_refused_with_32007() {
    if !is_root() {
        eprintln!("skipped: connecting as another uid needs root to switch users");
        return;
    }
    let daemon = TestDaemon::start();
    // Let the other user reach the socket file at all, so the peer-credential check is what
    // refuses it (normally the 0700 directory already keeps it out).
    std::fs::set_permissions(
        daemon.sandbox.root(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let dir = daemon.socket().parent().unwrap().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(daemon.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();

    let output = std::process::Command::new(crate::support::CLI)
        .env_clear()
        .envs(daemon.env())
        .arg("--socket")
        .arg(daemon.socket())
        .args(["status", "--json"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let reply: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(reply["error"]["code"], -32007, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uid 65534 is not allowed")
    );
    eventually("the refusal is logged", || {
        daemon.log().contains("connection refused")
    });
    daemon.conn().ok("daemon.status", json!({}));
}

/// A fixture whose daemon is never started (for tests of start-up failures).
fn unstarted(options: Options) -> TestDaemon {
    TestDaemon::unstarted(Sandbox::new(), options)
}
