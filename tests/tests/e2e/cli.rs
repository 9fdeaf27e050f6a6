//! The `atlasbridge` command line against the real daemon.

use serde_json::Value;

use crate::support::{Options, Sandbox, TestDaemon};

fn feature<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap()
}

#[test]
fn features_json_shows_an_env_override_and_the_editions_defaults() {
    let daemon = TestDaemon::start_with(
        Options::default()
            .edition("pro")
            .env("ATLASBRIDGE_FEATURE_RBAC", "off"),
    );
    let out = daemon.cli(&["features", "--json"]);
    out.assert_code(0);
    let list = out.json();
    assert_eq!(list["edition"], "pro");
    assert_eq!(list["edition_source"], "env");
    let rbac = feature(&list, "rbac");
    assert_eq!(
        (rbac["enabled"].clone(), rbac["source"].clone()),
        (false.into(), "env".into())
    );
    for name in [
        "decision_trace_v2",
        "risk_classifier",
        "policy_pinning",
        "audit_integrity_check",
        "policy_lifecycle",
    ] {
        let flag = feature(&list, name);
        assert_eq!(flag["enabled"], true, "{name}");
        assert_eq!(flag["source"], "edition", "{name}");
        assert_eq!(flag["enabled_from"], "pro", "{name}");
    }
    for name in [
        "cloud_policy_sync",
        "cloud_audit_stream",
        "cloud_control_channel",
        "web_dashboard",
    ] {
        assert_eq!(feature(&list, name)["enabled"], false, "{name}");
    }
    assert_eq!(list["features"].as_array().unwrap().len(), 10);
}

#[test]
fn features_and_edition_human_output() {
    let daemon = TestDaemon::start_with(
        Options::default().config("edition = \"enterprise\"\n[features]\nweb_dashboard = false\n"),
    );
    let out = daemon.cli(&["features"]);
    out.assert_code(0);
    assert!(
        out.stdout
            .starts_with("edition enterprise (from config file)\n"),
        "{}",
        out.stdout
    );
    let dashboard = out
        .stdout
        .lines()
        .find(|l| l.starts_with("web_dashboard"))
        .unwrap();
    let columns: Vec<&str> = dashboard.split_whitespace().take(4).collect();
    assert_eq!(columns, ["web_dashboard", "off", "enterprise", "config"]);

    let out = daemon.cli(&["edition"]);
    out.assert_code(0);
    assert!(
        out.stdout
            .starts_with("enterprise (from config file) — atlasbridged "),
        "{}",
        out.stdout
    );
    let out = daemon.cli(&["edition", "--json"]);
    let info = out.json();
    assert_eq!(
        (info["edition"].as_str(), info["source"].as_str()),
        (Some("enterprise"), Some("config"))
    );
    assert!(info["version"].is_string());
}

#[test]
fn a_shell_edition_that_differs_from_the_daemons_gets_a_note() {
    let daemon = TestDaemon::start();
    let out = daemon.cli_with(&["edition"], &[("ATLASBRIDGE_EDITION", "pro")]);
    out.assert_code(0);
    assert!(
        out.stdout.starts_with("community (from default)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("ATLASBRIDGE_EDITION=pro is set in this shell"),
        "{}",
        out.stderr
    );
}

#[test]
fn status_human_and_json() {
    let daemon = TestDaemon::start();
    let out = daemon.cli(&["status"]);
    out.assert_code(0);
    assert!(out.stdout.starts_with("atlasbridged "), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("(pid {}", daemon.pid())));
    assert!(out.stdout.contains("community (from default)"));
    assert!(out.stdout.contains("your role"), "{}", out.stdout);
    let status = daemon.cli(&["status", "--json"]).json();
    assert_eq!(status["pid"], daemon.pid());
    assert_eq!(status["socket"], daemon.socket().display().to_string());
    assert_eq!(status["cloud"]["state"], "disabled");
    assert_eq!(status["role"], "owner", "the daemon's own user");
}

#[test]
fn commands_that_need_the_daemon_say_how_to_start_it_and_exit_2() {
    let daemon = TestDaemon::unstarted(Sandbox::new(), Options::default());
    for command in [
        vec!["status"],
        vec!["features"],
        vec!["edition", "--json"],
        vec!["daemon", "status"],
    ] {
        let out = daemon.cli(&command);
        out.assert_code(2);
        let socket = daemon.socket().display().to_string();
        assert!(
            out.stderr
                .contains(&format!("atlasbridge --socket {socket} daemon start")),
            "{command:?}: {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    }
    let out = daemon.cli(&["status", "--json"]);
    assert_eq!(out.json()["error"]["kind"], "daemon_not_running");
}

#[test]
fn daemon_start_detaches_and_daemon_stop_waits_for_the_exit() {
    let daemon = TestDaemon::unstarted(Sandbox::new(), Options::default().edition("pro"));
    let out = daemon.cli(&["daemon", "start", "--json"]);
    out.assert_code(0);
    let started = out.json();
    assert_eq!(started["started"], true);
    let pid = started["pid"].as_u64().unwrap();

    let out = daemon.cli(&["daemon", "start"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains(&format!("already running (pid {pid})")),
        "{}",
        out.stdout
    );

    let status = daemon.cli(&["daemon", "status", "--json"]).json();
    assert_eq!(status["running"], true);
    assert_eq!(
        status["edition"], "pro",
        "the shell's environment reaches the daemon"
    );

    let out = daemon.cli(&["daemon", "stop"]);
    out.assert_code(0);
    assert_eq!(
        out.stdout.trim(),
        format!("atlasbridged stopped (pid {pid})")
    );
    assert!(!daemon.socket().exists());
    let out = daemon.cli(&["daemon", "stop"]);
    out.assert_code(0);
    assert_eq!(out.stdout.trim(), "atlasbridged is not running");
    let log = std::fs::read_to_string(started["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("atlasbridged started"), "{log}");
}

#[test]
fn daemon_start_reports_a_daemon_that_cannot_start() {
    let daemon = TestDaemon::unstarted(Sandbox::new(), Options::default().edition("gold"));
    let out = daemon.cli(&["daemon", "start"]);
    out.assert_code(1);
    assert!(out.stderr.contains("atlasbridged exited"), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown edition 'gold'"),
        "{}",
        out.stderr
    );
}

/// `atlasbridge … | head`: when the reader has gone, the CLI ends quietly with 141 (what a
/// shell shows for SIGPIPE) instead of a panic and its backtrace.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let daemon = TestDaemon::unstarted(Sandbox::new(), Options::default());
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policies/safe-default.yaml");
    let out = std::process::Command::new(crate::support::CLI)
        .env_clear()
        .envs(daemon.env())
        .env("ATLASBRIDGE_EDITION", "pro")
        .args(["policy", "validate"])
        .arg(&policy)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(141),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
