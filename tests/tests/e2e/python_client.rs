//! `docs/examples/agent.py`, the dependency-free Python client, against the real daemon: its exit
//! statuses for an allowed, a human-required and a denied prompt, errors failing closed, the
//! socket found as the Rust side finds it, a followed trace up to the daemon's end notice, and
//! its own unit tests (`docs/examples/test_agent.py`).
//!
//! These tests need `python3` (3.9 or newer) on `PATH`; without it they fail and say so.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{CliOutput, DEADLINE, Options, TestDaemon, YES_AND_DENY_DELETE, with_policy};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

/// `python3` with a clean environment (the daemon's sandbox one, where given), writing no
/// bytecode into the source tree. Fails the test with what to do when python3 is missing.
fn python3(env: &[(String, String)]) -> Command {
    match Command::new("python3")
        .args([
            "-c",
            "import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)",
        ])
        .output()
    {
        Ok(output) if output.status.success() => {}
        Ok(_) => panic!("python3 on PATH is older than 3.9: install python3 3.9 or newer"),
        Err(e) => panic!(
            "cannot run python3 ({e}): these tests run docs/examples/agent.py; \
             install python3 (3.9 or newer), e.g. `apt-get install python3`"
        ),
    }
    let mut command = Command::new("python3");
    command
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `command` to its end, within the deadline.
fn finish(mut command: Command) -> CliOutput {
    let mut child = command.spawn().expect("start python3");
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let status = wait_exit(&mut child);
    let output = CliOutput {
        code: status.map_or(-1, |s| s.code().unwrap_or(-1)),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "python3 did not finish within {DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
        output.stdout,
        output.stderr
    );
    output
}

/// Reads a pipe to its end on a thread, so that a chatty child never blocks on a full pipe.
fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// The child's exit status, or `None` (and the child killed) when the deadline passed first.
fn wait_exit(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + DEADLINE;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `python3 docs/examples/agent.py --socket <the daemon's> ARGS`, to its end.
fn agent_py(daemon: &TestDaemon, args: &[&str]) -> CliOutput {
    let mut command = python3(&daemon.env());
    command
        .arg(examples_dir().join("agent.py"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(args);
    finish(command)
}

fn trace_entry(daemon: &TestDaemon, seq: u64) -> Value {
    daemon
        .conn()
        .ok("trace.read", json!({"from_seq": seq, "limit": 1}))["entries"][0]
        .clone()
}

#[test]
fn agent_py_exits_with_the_answer_for_allowed_human_and_denied_prompts() {
    let daemon = with_policy("pro", YES_AND_DENY_DELETE, "");

    let allowed = agent_py(&daemon, &["--session", "py", "--prompt", "Continue? [y/n]"]);
    allowed.assert_code(0);
    assert!(
        allowed.stdout.starts_with("auto_reply \"y\" (rule yes)"),
        "{}",
        allowed.stdout
    );
    assert!(
        allowed.stdout.contains("recorded at seq 0"),
        "{}",
        allowed.stdout
    );

    let human = agent_py(
        &daemon,
        &[
            "--session",
            "py",
            "--type",
            "free_text",
            "--prompt",
            "Which branch?",
            "--human-reply",
            "main",
        ],
    );
    human.assert_code(10);
    assert!(
        human.stdout.starts_with("require_human"),
        "{}",
        human.stdout
    );
    assert!(
        human
            .stdout
            .contains("the person's answer \"main\" recorded at seq 2"),
        "{}",
        human.stdout
    );
    let decided = trace_entry(&daemon, 1);
    let recorded = trace_entry(&daemon, 2);
    assert_eq!(decided["action_taken"], "require_human");
    assert_eq!(
        (&recorded["action_taken"], &recorded["reply_value"]),
        (&json!("human_reply"), &json!("main"))
    );
    assert_eq!(
        recorded["prompt_id"], decided["prompt_id"],
        "one prompt, two entries"
    );

    let denied = agent_py(
        &daemon,
        &["--session", "py", "--prompt", "delete the repo? [y/n]"],
    );
    denied.assert_code(11);
    assert!(
        denied.stdout.starts_with("deny (rule deny-delete)"),
        "{}",
        denied.stdout
    );

    let json = agent_py(
        &daemon,
        &[
            "--json",
            "--session",
            "py",
            "--confidence",
            "low",
            "--prompt",
            "Continue? [y/n]",
        ],
    );
    json.assert_code(11);
    let answer = json.json();
    assert_eq!(answer["action"], "deny", "low confidence: {answer}");
    assert_eq!(answer["seq"], 4);
}

#[test]
fn agent_py_fails_closed_on_a_daemon_error_and_without_a_daemon() {
    let mut daemon = with_policy("pro", "policy_version: 1\n", "");
    let refused = agent_py(&daemon, &["--prompt", "Continue? [y/n]"]);
    refused.assert_code(11);
    assert!(
        refused.stderr.contains("(code -32001)"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("the protocol says deny"),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.stdout, "");

    daemon.stop();
    let nobody = agent_py(&daemon, &["--prompt", "Continue? [y/n]"]);
    nobody.assert_code(11);
    assert!(nobody.stderr.contains("not running"), "{}", nobody.stderr);
}

#[test]
fn agent_py_finds_the_socket_as_the_rust_client_does() {
    let daemon = TestDaemon::start_with(Options::default().edition("pro"));
    let socket = daemon.socket().display().to_string();
    let mut env = daemon.env();
    env.push(("ATLASBRIDGE_SOCKET".to_owned(), socket));
    let mut command = python3(&env);
    command.arg(examples_dir().join("agent.py")).args([
        "--type",
        "free_text",
        "--prompt",
        "Which branch?",
    ]);
    finish(command).assert_code(10);

    // The platform default, from the same variables.
    for vars in [
        vec![("XDG_RUNTIME_DIR", "/tmp/ab-xdg-run")],
        vec![
            ("XDG_RUNTIME_DIR", "/tmp/ab-xdg-run"),
            ("ATLASBRIDGE_SOCKET", "/tmp/ab.sock"),
        ],
        vec![
            ("ATLASBRIDGE_SOCKET", "relative/ab.sock"),
            ("XDG_RUNTIME_DIR", ""),
        ],
    ] {
        let env: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let expected = atlasbridge_protocol::paths::socket_path(None, &env).unwrap();
        let mut command = python3(&env.clone().into_iter().collect::<Vec<_>>());
        command
            .current_dir(std::env::current_dir().unwrap())
            .env("PYTHONPATH", examples_dir())
            .args(["-c", "import agent; print(agent.default_socket_path())"]);
        let printed = finish(command);
        printed.assert_code(0);
        assert_eq!(
            printed.stdout.trim_end(),
            expected.display().to_string(),
            "{vars:?}"
        );
    }
}

#[test]
fn agent_py_follows_the_trace_in_order_and_reports_the_end() {
    let mut daemon = TestDaemon::start_with(Options::default().edition("pro"));
    let mut writer = daemon.conn();
    let record = |prompt: &str| {
        json!({"session_id": "s", "prompt_id": prompt, "prompt_type": "yes_no",
               "action_taken": "auto_reply"})
    };
    writer.ok("decision.record", record("before-0"));
    writer.ok("decision.record", record("before-1"));

    let counted = agent_py(&daemon, &["--follow", "--from-seq", "1", "--count", "1"]);
    counted.assert_code(0);
    let only: Value = serde_json::from_str(counted.stdout.trim_end()).unwrap();
    assert_eq!(
        (&only["seq"], &only["prompt_id"]),
        (&json!(1), &json!("before-1"))
    );

    let mut command = python3(&daemon.env());
    command
        .arg(examples_dir().join("agent.py"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["--follow", "--from-seq", "0"]);
    let mut child = command.spawn().expect("start python3");
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let (lines, received) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            if lines.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next_entry = || -> Value {
        let line = received
            .recv_timeout(DEADLINE)
            .expect("agent.py printed an entry in time");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next_entry()["prompt_id"], "before-0");
    assert_eq!(next_entry()["prompt_id"], "before-1");
    writer.ok("decision.record", record("live"));
    let live = next_entry();
    assert_eq!(
        (&live["seq"], &live["prompt_id"]),
        (&json!(2), &json!("live"))
    );

    daemon.stop();
    let status = wait_exit(&mut child);
    reader.join().unwrap();
    let stderr = stderr.join().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(
        stderr.contains("atlasbridged ended the subscription (shutdown) after seq 2"),
        "{stderr}"
    );
}

#[test]
fn the_python_client_unit_tests_pass() {
    let mut command = python3(&[]);
    command
        .current_dir(examples_dir())
        .args(["-m", "unittest", "-v", "test_agent"]);
    let output = finish(command);
    assert_eq!(
        output.code, 0,
        "python3 -m unittest test_agent failed:\n{}{}",
        output.stdout, output.stderr
    );
    assert!(output.stderr.contains("OK"), "{}", output.stderr);
}
