//! The fixture: a sandbox directory with an isolated environment, the real daemon binary
//! started in it, and raw socket connections. Every wait has a deadline; nothing sleeps and then
//! asserts. When a test fails, the daemon's log is printed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const DAEMON: &str = env!("CARGO_BIN_EXE_e2e-atlasbridged");
pub const CLI: &str = env!("CARGO_BIN_EXE_e2e-atlasbridge");

/// The longest any single wait may take before the test fails.
/// A policy most decision tests share: `delete` anywhere is denied, a confident yes/no is
/// answered "y", everything else goes to a person (and low confidence is denied).
pub const YES_AND_DENY_DELETE: &str = r#"policy_version: "1"
name: e2e-yes-and-deny-delete
autonomy_mode: full
rules:
  - id: deny-delete
    match:
      contains: delete
    action:
      type: deny
      reason: never delete
  - id: yes
    match:
      prompt_type: [yes_no]
      min_confidence: high
    action:
      type: auto_reply
      value: "y"
defaults:
  no_match: require_human
  low_confidence: deny
"#;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A private temporary directory (short path under /tmp, so socket paths stay short).
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ab-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Self { dir }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path("run/d.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    /// A clean environment: only PATH survives from the test runner; home and XDG folders
    /// point into the sandbox; no ATLASBRIDGE_* leaks in.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".to_owned(), self.path("home").display().to_string()),
            (
                "XDG_RUNTIME_DIR".to_owned(),
                self.path("xdg-run").display().to_string(),
            ),
            (
                "XDG_CONFIG_HOME".to_owned(),
                self.path("xdg-config").display().to_string(),
            ),
            (
                "XDG_DATA_HOME".to_owned(),
                self.path("xdg-data").display().to_string(),
            ),
            (
                "XDG_STATE_HOME".to_owned(),
                self.path("xdg-state").display().to_string(),
            ),
            (
                "ATLASBRIDGE_LOG".to_owned(),
                "info,atlasbridged=debug".to_owned(),
            ),
            ("ATLASBRIDGE_DAEMON_BIN".to_owned(), DAEMON.to_owned()),
            // The CLI reads the trace itself when the daemon is stopped; it must find the same
            // data directory the daemon was given.
            (
                "ATLASBRIDGE_DATA_DIR".to_owned(),
                self.data_dir().display().to_string(),
            ),
        ];
        env.sort();
        env
    }

    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// How to start a daemon.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub edition: Option<String>,
    pub env: Vec<(String, String)>,
    /// Config file contents (written to the sandbox and passed with --config).
    pub config: Option<String>,
    pub args: Vec<String>,
    /// A command the daemon is started under (e.g. `prlimit --fsize=N --`).
    pub wrapper: Vec<String>,
}

impl Options {
    pub fn edition(mut self, edition: &str) -> Self {
        self.edition = Some(edition.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.to_owned());
        self
    }
}

/// A daemon of `edition` whose config points at `policy` (written to the sandbox as
/// `policy.yaml`), with `extra_config` appended to the config.
pub fn with_policy(edition: &str, policy: &str, extra_config: &str) -> TestDaemon {
    let sandbox = Sandbox::new();
    let file = sandbox.write("policy.yaml", policy);
    let config = format!("[policy]\nfile = \"{}\"\n{extra_config}", file.display());
    TestDaemon::start_in(sandbox, Options::default().edition(edition).config(&config))
}

/// A running `atlasbridged` in its own sandbox.
#[derive(Debug)]
pub struct TestDaemon {
    pub sandbox: Sandbox,
    pub options: Options,
    child: Option<Child>,
}

impl TestDaemon {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Self {
        Self::start_in(Sandbox::new(), options)
    }

    pub fn start_in(sandbox: Sandbox, options: Options) -> Self {
        let mut daemon = Self::unstarted(sandbox, options);
        daemon.launch();
        daemon
    }

    /// A fixture whose daemon has not been started (for start-up failures, or `launch` later).
    pub fn unstarted(sandbox: Sandbox, options: Options) -> Self {
        Self {
            sandbox,
            options,
            child: None,
        }
    }

    /// All variables for a process of this test: the sandbox's, the edition, the test's own.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.sandbox.env();
        if let Some(edition) = &self.options.edition {
            env.push(("ATLASBRIDGE_EDITION".to_owned(), edition.clone()));
        }
        env.extend(self.options.env.iter().cloned());
        env
    }

    pub fn log_path(&self) -> PathBuf {
        self.sandbox.path("daemon.log")
    }

    pub fn socket(&self) -> PathBuf {
        self.sandbox.socket()
    }

    /// The daemon command line for this sandbox, not yet started.
    pub fn command(&self) -> Command {
        let mut command = match self.options.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(DAEMON);
                command
            }
            None => Command::new(DAEMON),
        };
        command
            .env_clear()
            .envs(self.env())
            .arg("--socket")
            .arg(self.socket())
            .arg("--data-dir")
            .arg(self.sandbox.data_dir())
            .args(&self.options.args)
            .stdin(Stdio::null());
        if let Some(text) = &self.options.config {
            let path = self.sandbox.write("config.toml", text);
            command.arg("--config").arg(path);
        }
        command
    }

    /// Starts the daemon (again) and waits until it answers.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        std::fs::create_dir_all(self.socket().parent().unwrap()).unwrap();
        std::fs::set_permissions(
            self.socket().parent().unwrap(),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = self
            .command()
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn atlasbridged");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Dials with a growing pause until `daemon.status` answers.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Ok(mut conn) = Conn::open(&self.socket())
                && matches!(conn.try_call("daemon.status", json!({})), Ok(Ok(_)))
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "atlasbridged exited with {status} before answering:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "atlasbridged did not answer in time:\n{}",
                self.log()
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits for the daemon to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "atlasbridged did not exit within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, and the clean exit that must follow within 5 s.
    pub fn stop(&mut self) {
        self.signal(rustix::process::Signal::TERM);
        let status = self.wait_exit(Duration::from_secs(5));
        assert!(
            status.success(),
            "atlasbridged exited with {status}:\n{}",
            self.log()
        );
    }

    /// A clean stop, then a start on the same sandbox and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Every audit event so far, read over the socket page by page.
    pub fn audit_events(&self) -> Vec<Value> {
        let mut conn = self.conn();
        let mut events = Vec::new();
        let mut from = 0;
        loop {
            let page = conn.ok("audit.read", json!({"from_seq": from, "limit": 1000}));
            events.extend(page["entries"].as_array().unwrap().iter().cloned());
            match page["next_seq"].as_u64() {
                Some(next) => from = next,
                None => return events,
            }
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn conn(&self) -> Conn {
        Conn::open(&self.socket()).expect("connect to the daemon")
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_with(args, &[])
    }

    pub fn cli_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> CliOutput {
        self.cli_with_stdin(args, extra_env, None)
    }

    /// Like [`TestDaemon::cli_with`], with `input` on the CLI's standard input.
    pub fn cli_with_stdin(
        &self,
        args: &[&str],
        extra_env: &[(&str, &str)],
        input: Option<&str>,
    ) -> CliOutput {
        use std::io::Write as _;
        let mut command = Command::new(CLI);
        command
            .env_clear()
            .envs(self.env())
            .envs(extra_env.iter().map(|(k, v)| (*k, *v)))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run atlasbridge");
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input.as_bytes())
                .expect("write the CLI's stdin");
        }
        CliOutput::from(child.wait_with_output().expect("run atlasbridge"))
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- atlasbridged log -----\n{}\n----------------------------",
                self.log()
            );
        }
    }
}

/// What a CLI run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CliOutput {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl CliOutput {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit status\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A raw line-protocol connection, as a client written from the spec alone would use.
#[derive(Debug)]
pub struct Conn {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Conn {
    pub fn open(socket: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        stream.set_write_timeout(Some(DEADLINE))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self {
            writer: stream,
            reader,
            next_id: 1,
        })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.writer
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the daemon");
    }

    pub fn send(&mut self, message: &Value) {
        let mut line = serde_json::to_vec(message).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// The next message, or `None` when the daemon has closed the connection. A partial last
    /// line fails the test. A reset counts as closed: the kernel resets a Unix socket that is
    /// closed with lines still unread in it (the daemon stopped, or dropped this client).
    pub fn try_read(&mut self) -> Option<Value> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                assert!(
                    line.is_empty(),
                    "partial line before a reset: {:?}",
                    String::from_utf8_lossy(&line)
                );
                return None;
            }
            Err(e) => panic!("read from the daemon: {e}"),
        }
        assert_eq!(
            line.last(),
            Some(&b'\n'),
            "partial line from the daemon: {:?}",
            String::from_utf8_lossy(&line)
        );
        Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
            panic!(
                "daemon sent invalid JSON ({e}): {:?}",
                String::from_utf8_lossy(&line)
            )
        }))
    }

    pub fn read(&mut self) -> Value {
        self.try_read().expect("the daemon closed the connection")
    }

    /// Every message until the daemon closes the connection.
    pub fn read_to_end(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.try_read()).collect()
    }

    /// Sends a request and returns its result, or its error object.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Like [`call`](Self::call), but a closed connection is an `Err` instead of a failed test.
    /// An error with a null id (the daemon refusing the connection) counts as the answer.
    pub fn try_call(
        &mut self,
        method: &str,
        params: Value,
    ) -> std::io::Result<Result<Value, Value>> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        loop {
            let message = self
                .try_read()
                .ok_or_else(|| std::io::Error::other("the daemon closed the connection"))?;
            if message["id"] == json!(id)
                || (message["id"].is_null() && message.get("error").is_some())
            {
                assert_eq!(message["jsonrpc"], "2.0");
                return Ok(match message.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(message["result"].clone()),
                });
            }
        }
    }

    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    pub fn err(&mut self, method: &str, params: Value) -> Value {
        match self.call(method, params) {
            Ok(result) => panic!("{method} succeeded: {result}"),
            Err(error) => error,
        }
    }
}

/// Waits until `condition` holds, polling with a growing pause; fails the test at the deadline.
#[track_caller]
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    let mut pause = Duration::from_millis(1);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
