//! Real `atlasbridged` daemons linked to the test server, each in its own sandbox under /tmp
//! (short socket paths), with an isolated environment, as the e2e tests start them against the
//! test peer.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use atlasbridge_protocol::cloud::messages::Stream;
use serde_json::{Value, json};

use super::{DEADLINE, TestServer, target_dir};

/// A policy that answers a confident yes/no with "y".
pub const POLICY: &str = r#"policy_version: "1"
name: server-e2e
autonomy_mode: full
rules:
  - id: yes
    match:
      prompt_type: [yes_no]
      min_confidence: high
    action:
      type: auto_reply
      value: "y"
"#;

/// The daemon binary: `ATLASBRIDGE_DAEMON_BIN`, else `atlasbridged` beside this package's
/// binaries, built with `cargo build -p atlasbridged` when it is not there.
pub fn daemon_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("ATLASBRIDGE_DAEMON_BIN") {
                return PathBuf::from(path);
            }
            let path = target_dir().join("atlasbridged");
            if !path.exists() {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "-p", "atlasbridged"])
                    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                    .status()
                    .expect("run cargo build -p atlasbridged");
                assert!(status.success(), "cargo build -p atlasbridged failed");
            }
            assert!(
                path.exists(),
                "{} is missing: run `cargo build -p atlasbridged`",
                path.display()
            );
            path
        })
        .clone()
}

/// A running daemon linked to a server.
#[derive(Debug)]
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestDaemon {
    /// Starts a daemon of `org` with `api_key`, streaming to `server` with one-second heartbeats
    /// and a signed checkpoint every 10 entries or every second (so they reach the witness). Its
    /// policy is a local file ([`POLICY`]), which takes precedence over the cloud's.
    pub fn start(server: &TestServer, org: &str, api_key: &str) -> Self {
        Self::start_with(server, org, api_key, true, "manual")
    }

    /// A daemon without a local policy file (the built-in default until the cloud sends one) and
    /// with `policy_sync = "auto"`: it applies what the server distributes to it, after checking
    /// the server's signature and the hash.
    pub fn start_following_the_cloud(server: &TestServer, org: &str, api_key: &str) -> Self {
        Self::start_with(server, org, api_key, false, "auto")
    }

    /// A daemon without a local policy file and with `policy_sync = "manual"`: what the server
    /// distributes waits, verified, until someone accepts it (`policy.accept`).
    pub fn start_accepting_by_hand(server: &TestServer, org: &str, api_key: &str) -> Self {
        Self::start_with(server, org, api_key, false, "manual")
    }

    fn start_with(
        server: &TestServer,
        org: &str,
        api_key: &str,
        local_policy: bool,
        policy_sync: &str,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("abd-")
            .tempdir_in("/tmp")
            .expect("sandbox");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let policy_section = if local_policy {
            let policy = dir.path().join("policy.yaml");
            std::fs::write(&policy, POLICY).expect("write the policy");
            format!("[policy]\nfile = \"{}\"\n\n", policy.display())
        } else {
            String::new()
        };
        let config = format!(
            "{policy_section}[trace]\ncheckpoint_every_entries = 10\ncheckpoint_interval_s = 1\n\n[cloud]\nenabled = true\nendpoint = \"{}\"\norg_id = \"{org}\"\nserver_public_key = \"{}\"\nheartbeat_s = 1\npolicy_sync = \"{policy_sync}\"\n",
            server.ws_url(),
            server.public_key(),
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write the config");
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).expect("run dir");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let mut daemon = Self { dir, child: None };
        daemon.launch(api_key);
        daemon
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("run/d.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    fn launch(&mut self, api_key: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .expect("daemon log");
        let env = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", self.path("home").display().to_string()),
            (
                "XDG_RUNTIME_DIR",
                self.path("xdg-run").display().to_string(),
            ),
            (
                "XDG_CONFIG_HOME",
                self.path("xdg-config").display().to_string(),
            ),
            ("XDG_DATA_HOME", self.path("xdg-data").display().to_string()),
            (
                "XDG_STATE_HOME",
                self.path("xdg-state").display().to_string(),
            ),
            ("ATLASBRIDGE_LOG", "info,atlasbridged=debug".to_owned()),
            (
                "ATLASBRIDGE_DATA_DIR",
                self.path("data").display().to_string(),
            ),
            ("ATLASBRIDGE_EDITION", "enterprise".to_owned()),
            ("ATLASBRIDGE_CLOUD_API_KEY", api_key.to_owned()),
        ];
        let child = Command::new(daemon_binary())
            .env_clear()
            .envs(env)
            .arg("--socket")
            .arg(self.socket())
            .arg("--data-dir")
            .arg(self.path("data"))
            .arg("--config")
            .arg(self.path("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn atlasbridged");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Ok(mut conn) = Conn::open(&self.socket())
                && conn.call("daemon.status", json!({})).is_ok()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("atlasbridged exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "atlasbridged not ready:\n{}",
                self.log()
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Kills the daemon (SIGKILL, as a crash) and starts it again on the same data.
    pub fn restart(&mut self, api_key: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.launch(api_key);
    }

    pub fn conn(&self) -> Conn {
        Conn::open(&self.socket()).expect("connect to the daemon")
    }

    /// Makes `count` decisions in `session`, each answered "y".
    pub fn decide(&self, session: &str, count: usize) {
        let mut conn = self.conn();
        for i in 0..count {
            let answer = conn
                .call("decision.evaluate", event(session, &format!("p{i}")))
                .unwrap_or_else(|e| panic!("decision failed: {e}"));
            assert_eq!(answer["action"], "auto_reply", "{answer}");
        }
    }

    /// The daemon's runtime id, once the uplink knows it.
    pub fn runtime_id(&self) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let status = self
                .conn()
                .call("cloud.status", json!({}))
                .expect("cloud.status");
            if let Some(id) = status["runtime_id"].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no runtime_id in {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the daemon's link is connected (from then on its registry calls work).
    pub fn wait_connected(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let status = self.cloud_status();
            if status["state"] == "connected" {
                return;
            }
            assert!(Instant::now() < deadline, "not connected: {status}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (seq, entry_hash) of every local entry of `stream`.
    pub fn local_chain(&self, stream: Stream) -> Vec<(u64, String)> {
        let method = match stream {
            Stream::Trace => "trace.read",
            Stream::Audit => "audit.read",
        };
        let mut conn = self.conn();
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let page = conn
                .call(method, json!({"from_seq": from, "limit": 1000}))
                .expect("read the chain");
            for entry in page["entries"].as_array().into_iter().flatten() {
                out.push((
                    entry["seq"].as_u64().expect("seq"),
                    entry["entry_hash"].as_str().expect("hash").to_owned(),
                ));
            }
            match page["next_seq"].as_u64() {
                Some(next) => from = next,
                None => break,
            }
        }
        out
    }

    /// Decides one prompt the server-e2e policy would answer "y": the daemon's answer.
    pub fn decide_one(&self, session: &str, prompt: &str) -> Value {
        self.conn()
            .call("decision.evaluate", event(session, prompt))
            .unwrap_or_else(|e| panic!("decision failed: {e}"))
    }

    /// The active policy (`policy.status`).
    pub fn policy_status(&self) -> Value {
        self.conn()
            .call("policy.status", json!({}))
            .expect("policy.status")
    }

    /// The `event_type` of every local audit event, in order.
    pub fn audit_event_types(&self) -> Vec<String> {
        let mut conn = self.conn();
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let page = conn
                .call("audit.read", json!({"from_seq": from, "limit": 1000}))
                .expect("read the audit log");
            for entry in page["entries"].as_array().into_iter().flatten() {
                out.push(entry["event_type"].as_str().unwrap_or_default().to_owned());
            }
            match page["next_seq"].as_u64() {
                Some(next) => from = next,
                None => break,
            }
        }
        out
    }

    /// The daemon's view of the link.
    pub fn cloud_status(&self) -> Value {
        self.conn()
            .call("cloud.status", json!({}))
            .expect("cloud.status")
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- atlasbridged log ({}) ---\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

/// A prompt event the policy answers "y".
pub fn event(session: &str, prompt: &str) -> Value {
    json!({
        "session_id": session,
        "prompt_id": prompt,
        "prompt_type": "yes_no",
        "prompt_text": "Continue? [y/n]",
        "confidence": "high",
    })
}

/// One JSON-RPC connection to a daemon (newline-delimited JSON).
#[derive(Debug)]
pub struct Conn {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Conn {
    pub fn open(socket: &std::path::Path) -> std::io::Result<Self> {
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

    /// The result, or the error object (or an I/O failure as a string).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
        .map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| e.to_string())?;
        loop {
            let mut text = String::new();
            let read = self
                .reader
                .read_line(&mut text)
                .map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("the daemon closed the connection".to_owned());
            }
            let message: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if message["id"] == json!(id)
                || (message["id"].is_null() && message.get("error").is_some())
            {
                return match message.get("error") {
                    Some(error) => Err(error.to_string()),
                    None => Ok(message["result"].clone()),
                };
            }
        }
    }
}
