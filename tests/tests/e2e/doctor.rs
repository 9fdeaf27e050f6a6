//! `atlasbridge doctor` against the real daemon and real files: a healthy installation passes,
//! and each kind of damage is named with the command that repairs it — which, run, does. Also
//! the config table `doctor` checks with, held to the daemon's own loader.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{CliOutput, Options, Sandbox, TestDaemon, with_policy};
use crate::trace::record_params;

const SAFE_DEFAULT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/policies/safe-default.yaml"
);

/// The checks, in the order they are printed.
const CHECKS: [&str; 10] = [
    "binaries",
    "socket",
    "permissions",
    "data_dir",
    "config",
    "policy",
    "trace",
    "audit",
    "disk",
    "cloud",
];

fn doctor(daemon: &TestDaemon) -> (CliOutput, Value) {
    let human = daemon.cli(&["doctor"]);
    let json = daemon.cli(&["doctor", "--json"]);
    assert_eq!(human.code, json.code, "{}\n{}", human.stdout, json.stdout);
    let report = json.json();
    (human, report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

/// `atlasbridge --socket <socket>`, as the fixes spell it.
fn cli_prefix(daemon: &TestDaemon) -> String {
    format!("atlasbridge --socket {}", daemon.socket().display())
}

/// Runs a suggested fix in a shell, with the fixture's environment and `atlasbridge` on PATH.
fn run_fix(daemon: &TestDaemon, fix: &str) {
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(crate::support::CLI, bin.path().join("atlasbridge")).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(fix)
        .env_clear()
        .envs(daemon.env())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{fix}` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn record(daemon: &TestDaemon, count: usize) {
    let mut conn = daemon.conn();
    for i in 0..count {
        conn.ok("decision.record", record_params("s", &format!("p{i}")));
    }
}

fn last_segment(daemon: &TestDaemon) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(daemon.sandbox.data_dir().join("trace"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("decisions-")
        })
        .collect();
    files.sort();
    files.pop().unwrap()
}

/// Every file and directory under `dir` with its size, mode and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u32, i64, i64)> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let meta = std::fs::symlink_metadata(&next).unwrap();
        found.insert(
            next.clone(),
            (meta.len(), meta.mode(), meta.mtime(), meta.mtime_nsec()),
        );
        if meta.is_dir() {
            for entry in std::fs::read_dir(&next).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    found
}

#[test]
fn a_healthy_installation_passes_every_check() {
    let policy = std::fs::read_to_string(SAFE_DEFAULT).unwrap();
    let daemon = with_policy("pro", &policy, "");
    record(&daemon, 3);
    let (human, report) = doctor(&daemon);
    human.assert_code(0);

    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CHECKS);
    assert_eq!(report["ok"], true);
    for entry in report["checks"].as_array().unwrap() {
        let keys: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["detail", "fix", "name", "status"], "{entry}");
        // Free space is the machine's, not the installation's.
        if entry["name"] != "disk" {
            assert_eq!(entry["status"], "ok", "{entry}");
            assert_eq!(entry["fix"], Value::Null, "{entry}");
        }
    }
    assert_ne!(check(&report, "disk")["status"], "fail");
    let policy_file = daemon.sandbox.path("policy.yaml").display().to_string();
    assert_eq!(
        check(&report, "policy")["detail"],
        format!(
            "safe-default (a9075535fe6b570e, 3 rules, autonomy assist) from {policy_file}, \
             active in the daemon"
        )
    );
    assert!(
        check(&report, "socket")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("running (pid {}", daemon.pid())),
        "{report}"
    );
    assert_eq!(
        check(&report, "trace")["detail"],
        "head seq 2, 3 entries, verified by the daemon at its start"
    );

    // The disk check may warn, with a fix line, on a full machine.
    let lines: Vec<&str> = human
        .stdout
        .lines()
        .filter(|l| !l.starts_with("  fix: "))
        .collect();
    assert_eq!(lines.len(), CHECKS.len() + 1, "{}", human.stdout);
    for (line, name) in lines.iter().zip(CHECKS) {
        if name != "disk" {
            assert!(
                line.starts_with(&format!("ok    {name}: ")),
                "{line:?}\n{}",
                human.stdout
            );
        }
    }
    assert!(
        lines.last().unwrap().ends_with(" warn, 0 fail"),
        "{}",
        human.stdout
    );
}

#[test]
fn with_the_daemon_stopped_the_files_are_checked_and_the_socket_names_the_start_command() {
    let mut daemon = TestDaemon::start_with(Options::default().edition("pro"));
    record(&daemon, 2);
    daemon.stop();
    let (human, report) = doctor(&daemon);
    human.assert_code(0);
    let socket = check(&report, "socket");
    assert_eq!(socket["status"], "warn");
    assert_eq!(
        socket["detail"],
        format!("{}: atlasbridged is not running", daemon.socket().display())
    );
    assert_eq!(
        socket["fix"],
        format!("{} daemon start", cli_prefix(&daemon))
    );
    assert!(
        human.stdout.contains(&format!(
            "warn  socket: {}: atlasbridged is not running\n  fix: {} daemon start\n",
            daemon.socket().display(),
            cli_prefix(&daemon)
        )),
        "{}",
        human.stdout
    );
    let trace = check(&report, "trace");
    assert_eq!(trace["status"], "ok", "{trace}");
    assert!(
        trace["detail"]
            .as_str()
            .unwrap()
            .starts_with("head seq 1 ("),
        "{trace}"
    );
    assert_eq!(
        check(&report, "data_dir")["detail"],
        format!(
            "{} (ATLASBRIDGE_DATA_DIR): a writable directory of uid {}",
            daemon.sandbox.data_dir().display(),
            rustix::process::geteuid().as_raw()
        )
    );

    // Never started: nothing is there yet, which is not a failure either.
    let fresh = TestDaemon::unstarted(Sandbox::new(), Options::default());
    let (human, report) = doctor(&fresh);
    human.assert_code(0);
    assert_eq!(check(&report, "data_dir")["status"], "warn");
    assert_eq!(check(&report, "trace")["detail"], "no entries yet");
}

#[test]
fn a_key_file_others_can_read_fails_with_the_chmod_that_fixes_it() {
    let daemon = TestDaemon::start_with(Options::default().edition("pro"));
    let key = daemon.sandbox.data_dir().join("keys/identity.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let (human, report) = doctor(&daemon);
    human.assert_code(1);
    assert_eq!(report["ok"], false);
    let permissions = check(&report, "permissions");
    assert_eq!(permissions["status"], "fail");
    assert_eq!(
        permissions["detail"],
        format!(
            "key file {} is 0644: group and others can read it",
            key.display()
        )
    );
    let fix = permissions["fix"].as_str().unwrap();
    assert_eq!(fix, format!("chmod 600 {}", key.display()));
    assert!(
        human
            .stdout
            .contains(&format!("fail  permissions: key file {}", key.display())),
        "{}",
        human.stdout
    );

    run_fix(&daemon, fix);
    let (human, report) = doctor(&daemon);
    human.assert_code(0);
    assert_eq!(check(&report, "permissions")["status"], "ok");
}

#[test]
fn a_broken_policy_file_fails_naming_its_file_and_line() {
    let policy = std::fs::read_to_string(SAFE_DEFAULT).unwrap();
    let daemon = with_policy("pro", &policy, "");
    let file = daemon.sandbox.write(
        "policy.yaml",
        "policy_version: \"1\"\nname: broken\nrules:\n  - id: r1\n    match:\n      \
         min_confidence: certain\n    action:\n      type: deny\n",
    );

    let (human, report) = doctor(&daemon);
    human.assert_code(1);
    let found = check(&report, "policy");
    assert_eq!(found["status"], "fail");
    let detail = found["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!(
            "{}:6:23: rules → 0 → match → min_confidence: unknown confidence 'certain'",
            file.display()
        )),
        "{detail}"
    );
    assert!(
        detail.ends_with("; the daemon keeps safe-default active"),
        "{detail}"
    );
    assert_eq!(
        found["fix"],
        format!(
            "correct line 6 of {file} (every problem: `{cli} policy validate {file}`), then {cli} \
             policy reload",
            file = file.display(),
            cli = cli_prefix(&daemon)
        )
    );

    // Corrected and reloaded, as the fix says, it passes.
    daemon.sandbox.write("policy.yaml", &policy);
    run_fix(&daemon, &format!("{} policy reload", cli_prefix(&daemon)));
    let (human, report) = doctor(&daemon);
    human.assert_code(0);
    assert_eq!(check(&report, "policy")["status"], "ok", "{report}");
}

#[test]
fn a_corrupted_trace_tail_fails_with_the_repair_command() {
    let mut daemon = TestDaemon::start_with(Options::default().edition("pro"));
    record(&daemon, 6);
    daemon.stop();
    let last = last_segment(&daemon);
    let text = std::fs::read_to_string(&last).unwrap();
    let edited = text.replacen("\"prompt_id\":\"p3\"", "\"prompt_id\":\"pX\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&last, &edited).unwrap();

    // Stopped: the files say where, and the fix starts the daemon first.
    let (human, report) = doctor(&daemon);
    human.assert_code(1);
    let trace = check(&report, "trace");
    assert_eq!(trace["status"], "fail");
    let detail = trace["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!(
            "the trace is broken at seq 3: hash_mismatch at {}:4: entry_hash ",
            last.display()
        )),
        "{detail}"
    );
    assert!(
        detail.ends_with("; the daemon refuses appends until it is repaired"),
        "{detail}"
    );
    let cli = cli_prefix(&daemon);
    assert_eq!(
        trace["fix"],
        format!("{cli} daemon start && {cli} trace repair --start-new-segment")
    );
    assert_eq!(check(&report, "audit")["status"], "ok");

    // Running on the broken chain: the daemon says so, and the repair alone is the fix.
    daemon.launch();
    let (human, report) = doctor(&daemon);
    human.assert_code(1);
    let trace = check(&report, "trace");
    assert_eq!(trace["status"], "fail");
    assert!(
        trace["detail"]
            .as_str()
            .unwrap()
            .contains("broken at seq 3"),
        "{trace}"
    );
    let fix = trace["fix"].as_str().unwrap();
    assert_eq!(fix, format!("{cli} trace repair --start-new-segment"));
    run_fix(&daemon, fix);
    let (human, report) = doctor(&daemon);
    human.assert_code(0);
    assert_eq!(check(&report, "trace")["status"], "ok", "{report}");
}

#[test]
fn doctor_changes_nothing_not_even_a_torn_tail_the_daemon_would_cut() {
    let mut daemon = TestDaemon::start_with(Options::default().edition("pro"));
    record(&daemon, 3);
    daemon.stop();
    let last = last_segment(&daemon);
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(b"{\"trace_version\":2,\"seq\":3,\"sess");
    std::fs::write(&last, &bytes).unwrap();
    let before = snapshot(daemon.sandbox.root());

    let (human, report) = doctor(&daemon);
    human.assert_code(0);
    let trace = check(&report, "trace");
    assert_eq!(trace["status"], "warn", "{trace}");
    assert!(
        trace["detail"].as_str().unwrap().contains(&format!(
            "{} ends in a torn line (32 bytes) that the daemon cuts off at its next start",
            last.display()
        )),
        "{trace}"
    );
    assert_eq!(
        snapshot(daemon.sandbox.root()),
        before,
        "doctor wrote to the sandbox"
    );
}

#[test]
fn a_config_the_daemon_would_refuse_fails_with_its_line() {
    let daemon = TestDaemon::unstarted(Sandbox::new(), Options::default());
    let config = daemon.sandbox.write(
        "config.toml",
        "edition = \"pro\"\n[daemon]\nidle_timeout = 600\n",
    );
    let config_text = config.display().to_string();
    let out = daemon.cli_with(
        &["doctor", "--json"],
        &[("ATLASBRIDGE_CONFIG", config_text.as_str())],
    );
    out.assert_code(1);
    let report = out.json();
    let found = check(&report, "config");
    assert_eq!(found["status"], "fail");
    assert_eq!(
        found["detail"],
        format!(
            "{config_text}:3:1: unknown key `idle_timeout` in [daemon]; expected one of \
             `idle_timeout_s`, `write_timeout_s`, `max_connections`, `max_requests_in_flight`, \
             `shutdown_timeout_s`: the daemon does not start with it"
        )
    );
    assert_eq!(found["fix"], format!("correct line 3 of {config_text}"));
    // What depends on the config is not guessed at.
    assert_eq!(check(&report, "policy")["status"], "warn");
    assert_eq!(check(&report, "cloud")["status"], "warn");

    // The daemon agrees.
    let started = daemon.cli_with(
        &["daemon", "start"],
        &[("ATLASBRIDGE_CONFIG", config_text.as_str())],
    );
    started.assert_code(1);
    assert!(
        started
            .stderr
            .contains(&format!("{config_text}:3:1: unknown field `idle_timeout`")),
        "{}",
        started.stderr
    );
}

/// The names the daemon's loader says it expects, from its message for an unknown key.
fn expected_keys(section: Option<&str>) -> Vec<String> {
    let text = match section {
        Some(section) => format!("[{section}]\nzz_not_a_key = 1\n"),
        None => "zz_not_a_key = 1\n".to_owned(),
    };
    let error = atlasbridged::config::Config::parse(&text, Path::new("/c.toml"))
        .expect_err("an unknown key is refused")
        .to_string();
    let (_, expected) = error
        .split_once(", expected ")
        .unwrap_or_else(|| panic!("no list of expected keys in {error:?}"));
    let mut keys: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys
}

#[test]
fn the_config_keys_doctor_checks_are_the_daemons() {
    use atlasbridge::cli::doctor::{CONFIG_KEYS, ConfigKey, FEATURES_SECTION, ValueKind};

    let load = |key: &ConfigKey, value: &str| {
        let text = match key.section {
            Some(section) => format!("[{section}]\n{} = {value}\n", key.key),
            None => format!("{} = {value}\n", key.key),
        };
        atlasbridged::config::Config::parse(&text, Path::new("/etc/ab/config.toml"))
    };
    for key in CONFIG_KEYS {
        if let Err(e) = load(key, key.example) {
            panic!("the daemon refuses {key:?}: {e}");
        }
        if let ValueKind::Integer { min, max } = key.kind {
            assert!(load(key, &min.to_string()).is_ok(), "{key:?} at {min}");
            if min > 0 {
                assert!(
                    load(key, &(min - 1).to_string()).is_err(),
                    "{key:?} below {min}"
                );
            }
            if max < i64::MAX as u64 {
                assert!(load(key, &max.to_string()).is_ok(), "{key:?} at {max}");
                assert!(
                    load(key, &(max + 1).to_string()).is_err(),
                    "{key:?} above {max}"
                );
            } else {
                assert!(
                    load(key, &i64::MAX.to_string()).is_ok(),
                    "{key:?} at the top"
                );
            }
        }
    }

    let mut sections: Vec<&str> = CONFIG_KEYS.iter().filter_map(|k| k.section).collect();
    sections.sort_unstable();
    sections.dedup();
    let mut top: Vec<String> = CONFIG_KEYS
        .iter()
        .filter(|k| k.section.is_none())
        .map(|k| k.key.to_owned())
        .chain(sections.iter().map(|s| (*s).to_owned()))
        .chain([FEATURES_SECTION.to_owned()])
        .collect();
    top.sort();
    assert_eq!(expected_keys(None), top, "top-level keys");
    for section in sections {
        let mut ours: Vec<String> = CONFIG_KEYS
            .iter()
            .filter(|k| k.section == Some(section))
            .map(|k| k.key.to_owned())
            .collect();
        ours.sort();
        assert_eq!(expected_keys(Some(section)), ours, "[{section}]");
    }
}
