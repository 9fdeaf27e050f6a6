//! Fixtures for the server's tests: a database of its own per test, the real
//! `atlasbridge-server` binary, real `atlasbridged` daemons, and a hand-written runtime.
//!
//! Tests need PostgreSQL: `scripts/postgres.sh start && eval "$(scripts/postgres.sh url)"`.
//! Without `ATLASBRIDGE_TEST_DATABASE_URL` a test says why and passes as skipped, except under
//! CI (`CI` set), where it fails: a skipped database test must never look green there.

// Each test binary uses part of the fixtures, and `pub` here only spans the test crate.
#![allow(dead_code, unreachable_pub)]

pub mod agent;
pub mod api;
pub mod daemon;
pub mod runtime;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atlasbridge_protocol::cloud::messages::Stream;
use atlasbridge_server::store::{self, ChainStatus, RuntimeRecord};
use tokio_postgres::NoTls;

/// The longest any single wait may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The server binary of this package, built by cargo for its tests.
pub const SERVER: &str = env!("CARGO_BIN_EXE_atlasbridge-server");

/// The CA that signed the test cluster's certificate, or `None` (after saying why) when it is
/// not known and this is not CI.
pub fn database_ca_file() -> Option<PathBuf> {
    match std::env::var_os("ATLASBRIDGE_TEST_DATABASE_CA_FILE").filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            let why = "ATLASBRIDGE_TEST_DATABASE_CA_FILE is not set; \
                       run `eval \"$(scripts/postgres.sh url)\"`";
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but the database's CA is missing: {why}"
            );
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// The owner and app URLs of the test cluster, or `None` (after saying why) when there is none
/// and this is not CI.
pub fn database_urls() -> Option<(String, String)> {
    let owner = std::env::var("ATLASBRIDGE_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty());
    let app = std::env::var("ATLASBRIDGE_TEST_APP_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty());
    match (owner, app) {
        (Some(owner), Some(app)) => Some((owner, app)),
        _ => {
            let why = "ATLASBRIDGE_TEST_DATABASE_URL and ATLASBRIDGE_TEST_APP_DATABASE_URL are not set; \
                       run `scripts/postgres.sh start && eval \"$(scripts/postgres.sh url)\"`";
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but the database is missing: {why}"
            );
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// `url` (`postgres://user:password@host:port/database?options`) with another database.
fn with_database(url: &str, database: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..]
        .find('/')
        .map_or(url.len(), |i| authority + i);
    let query = url[path..]
        .find('?')
        .map(|i| &url[path + i..])
        .unwrap_or("");
    format!("{}/{database}{query}", &url[..path])
}

/// A database of its own, migrated, dropped at the end.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    /// The owner role, on this database.
    pub owner_url: String,
    /// The app role (no superuser, no BYPASSRLS), on this database.
    pub app_url: String,
    admin_url: String,
}

impl TestDb {
    /// A fresh database, or `None` when the tests skip (see [`database_urls`]).
    pub async fn create() -> Option<Self> {
        let db = Self::create_unmigrated().await?;
        let owner = atlasbridge_server::pg_target::PgTarget::new(&db.owner_url, None)
            .expect("the test database's owner URL");
        atlasbridge_server::migrate::migrate(&owner, &db.app_role())
            .await
            .expect("migrate the test database");
        Some(db)
    }

    /// A fresh database without the schema.
    pub async fn create_unmigrated() -> Option<Self> {
        let (owner, app) = database_urls()?;
        let name = format!("ab_test_{}", uuid::Uuid::now_v7().simple());
        let (client, connection) = tokio_postgres::connect(&owner, NoTls)
            .await
            .expect("connect as the owner role");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        Some(Self {
            owner_url: with_database(&owner, &name),
            app_url: with_database(&app, &name),
            admin_url: owner,
            name,
        })
    }

    /// The app role's name, from its URL.
    pub fn app_role(&self) -> String {
        let config: tokio_postgres::Config = self.app_url.parse().expect("app URL");
        config.get_user().expect("app URL names a user").to_owned()
    }

    /// A connection as `url`'s role.
    pub async fn connect(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    /// A connection as the app role.
    pub async fn app(&self) -> tokio_postgres::Client {
        Self::connect(&self.app_url).await
    }

    /// The chain status of a runtime's stream, read as the app role scoped to `org`.
    pub async fn chain_status(
        &self,
        org: &str,
        runtime_id: &str,
        stream: Stream,
    ) -> Option<ChainStatus> {
        let mut client = self.app().await;
        let tx = scoped(&mut client, org).await;
        store::chain_status(&tx, runtime_id, stream)
            .await
            .expect("chain status")
    }

    /// A runtime of `org` from the registry.
    pub async fn runtime(
        &self,
        org: &str,
        runtime_id: &str,
        heartbeat_s: u64,
    ) -> Option<RuntimeRecord> {
        let mut client = self.app().await;
        let tx = scoped(&mut client, org).await;
        store::runtime(&tx, runtime_id, heartbeat_s)
            .await
            .expect("runtime")
    }

    /// The flags of a runtime: (kind, detail).
    pub async fn flags(&self, org: &str, runtime_id: &str) -> Vec<(String, String)> {
        let mut client = self.app().await;
        let tx = scoped(&mut client, org).await;
        store::flags(&tx, runtime_id).await.expect("flags")
    }

    /// (seq, entry_hash) of every stored entry of a runtime's stream, in seq order, and the
    /// number of rows (to see doubles, were the primary key ever to allow them).
    pub async fn entries(&self, org: &str, runtime_id: &str, stream: Stream) -> Vec<(u64, String)> {
        let mut client = self.app().await;
        let tx = scoped(&mut client, org).await;
        tx.query(
            "SELECT seq, entry_hash FROM entries WHERE runtime_id = $1 AND stream = $2 ORDER BY seq",
            &[&runtime_id, &stream.name()],
        )
        .await
        .expect("entries")
        .iter()
        .map(|row| (row.get::<_, i64>(0) as u64, row.get(1)))
        .collect()
    }
}

impl TestDb {
    /// Rows and distinct seqs stored for a runtime's stream: equal unless something was doubled.
    pub async fn row_counts(&self, org: &str, runtime_id: &str, stream: Stream) -> (i64, i64) {
        let mut client = self.app().await;
        let tx = scoped(&mut client, org).await;
        let row = tx
            .query_one(
                "SELECT count(*), count(DISTINCT seq) FROM entries WHERE runtime_id = $1 AND stream = $2",
                &[&runtime_id, &stream.name()],
            )
            .await
            .expect("count entries");
        (row.get(0), row.get(1))
    }

    /// Waits until the server holds exactly `local` (seq, entry_hash) of a runtime's trace, each
    /// once, and checks that its chain is `continuous`.
    pub async fn wait_for_exactly(&self, org: &str, runtime_id: &str, local: &[(u64, String)]) {
        eventually("the server holds the whole trace", || async move {
            self.entries(org, runtime_id, Stream::Trace).await == local
        })
        .await;
        let (rows, distinct) = self.row_counts(org, runtime_id, Stream::Trace).await;
        assert_eq!(
            (rows, distinct),
            (local.len() as i64, local.len() as i64),
            "nothing lost, nothing doubled"
        );
        let status = self
            .chain_status(org, runtime_id, Stream::Trace)
            .await
            .expect("a chain");
        assert_eq!(status.status, "continuous", "{status:?}");
        assert_eq!(status.next_seq, local.len() as u64);
    }
}

impl TestDb {
    /// (checkpoint_seq, verdict) of every checkpoint the server holds of a runtime.
    pub async fn checkpoint_verdicts(&self, org: &str, runtime_id: &str) -> Vec<(i64, String)> {
        let mut client = self.app().await;
        let tx = scoped(&mut client, org).await;
        tx.query(
            "SELECT checkpoint_seq, verdict FROM checkpoints WHERE runtime_id = $1 ORDER BY checkpoint_seq",
            &[&runtime_id],
        )
        .await
        .expect("checkpoints")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort, on a thread of its own: Drop may run inside a runtime.
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A transaction in which only `org`'s rows exist (what the server does per request).
pub async fn scoped<'a>(
    client: &'a mut tokio_postgres::Client,
    org: &str,
) -> tokio_postgres::Transaction<'a> {
    let tx = client.transaction().await.expect("begin");
    tx.execute("SELECT set_config('atlasbridge.org_id', $1, true)", &[&org])
        .await
        .expect("scope the transaction");
    tx
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("its address").port()
}

/// Server settings a test may change.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub pool_size: usize,
    pub pool_wait_ms: u64,
    pub max_connections: usize,
    pub heartbeat_s: u64,
    pub token_requests_per_minute: u32,
    /// Lifetime of the runtimes' access tokens.
    pub token_lifetime_s: u64,
    /// Migrate at start (with the owner URL) rather than find the schema ready.
    pub migrate_at_start: bool,
    /// Failed logins per address before 429.
    pub login_failures_per_window: u32,
    /// More TOML, appended to the config file (e.g. an `[oidc]` section).
    pub extra_config: String,
    /// Reach the database over TLS, verified with this CA (`sslmode=verify-full`, `ca_file`).
    pub database_ca_file: Option<PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            pool_wait_ms: 2000,
            max_connections: 100,
            heartbeat_s: 30,
            token_requests_per_minute: 60,
            token_lifetime_s: 3600,
            migrate_at_start: true,
            login_failures_per_window: 10,
            extra_config: String::new(),
            database_ca_file: None,
        }
    }
}

/// The real `atlasbridge-server`, on 127.0.0.1.
#[derive(Debug)]
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub address: SocketAddr,
    child: Option<Child>,
}

impl TestServer {
    /// Writes the config and starts the server; waits until `/readyz` says ready.
    pub fn start(db: &TestDb, options: ServerOptions) -> Self {
        let server = Self::unstarted(db, options);
        let mut server = server;
        server.launch();
        server
    }

    /// Writes the config only.
    pub fn unstarted(db: &TestDb, options: ServerOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("abs-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // libpq's spelling, which the server must accept as its own `require`.
        let (tls_query, ca_file) = match &options.database_ca_file {
            Some(ca) => (
                "?sslmode=verify-full",
                format!("ca_file = \"{}\"\n", ca.display()),
            ),
            None => ("", String::new()),
        };
        let owner = if options.migrate_at_start {
            format!("owner_url = \"{}{tls_query}\"\n", db.owner_url)
        } else {
            String::new()
        };
        let config = format!(
            "listen = \"{address}\"\n\
             [database]\nurl = \"{}{tls_query}\"\n{owner}{ca_file}app_role = \"{}\"\npool_size = {}\npool_wait_ms = {}\n\
             [auth]\njwt_secret = \"test-secret-test-secret-test-secret-0123\"\ntoken_lifetime_s = {}\ntoken_requests_per_minute = {}\n\
             [runtime]\nheartbeat_s = {}\nmax_connections = {}\nsigning_key_file = \"{}\"\n\
             [people]\ncookie_secure = false\nlogin_failures_per_window = {}\n{}",
            db.app_url,
            db.app_role(),
            options.pool_size,
            options.pool_wait_ms,
            options.token_lifetime_s,
            options.token_requests_per_minute,
            options.heartbeat_s,
            options.max_connections,
            dir.path().join("server.key").display(),
            options.login_failures_per_window,
            options.extra_config,
        );
        std::fs::write(dir.path().join("server.toml"), config).expect("write the server config");
        Self {
            dir,
            address,
            child: None,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("server.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs a subcommand to completion: (success, stdout, stderr).
    pub fn command(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(SERVER)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("ATLASBRIDGE_SERVER_CONFIG")
            .output()
            .expect("run atlasbridge-server");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs a subcommand with `stdin` as its standard input: (success, stdout, stderr).
    pub fn command_with_stdin(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let mut child = Command::new(SERVER)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("ATLASBRIDGE_SERVER_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run atlasbridge-server");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let output = child
            .wait_with_output()
            .expect("wait for atlasbridge-server");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Creates a user with the real `create-user` command; returns its id.
    pub fn user(&self, org: &str, email: &str, role: &str, password: &str) -> String {
        let (ok, stdout, stderr) = self.command_with_stdin(
            &[
                "create-user",
                "--org",
                org,
                "--email",
                email,
                "--role",
                role,
                "--password-stdin",
            ],
            &format!("{password}\n"),
        );
        assert!(ok, "create-user {email}: {stderr}");
        stdout.trim().to_owned()
    }

    /// The server process's resident memory, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("server running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmRSS")
    }

    /// Creates an org and an API key of it, with the real subcommands; returns the key.
    pub fn org_with_key(&self, org: &str) -> String {
        let (ok, _, stderr) = self.command(&["create-org", org]);
        assert!(ok, "create-org {org}: {stderr}");
        let (ok, stdout, stderr) = self.command(&["create-api-key", org, "--label", "test"]);
        assert!(ok, "create-api-key {org}: {stderr}");
        stdout.trim().to_owned()
    }

    /// The server's public key, as runtimes configure it.
    pub fn public_key(&self) -> String {
        let (ok, stdout, stderr) = self.command(&["public-key"]);
        assert!(ok, "public-key: {stderr}");
        stdout.trim().to_owned()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/connect", self.address)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Starts the process (again), retrying while the old port is still being released.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .expect("open the server log");
            let mut child = Command::new(SERVER)
                .arg("--config")
                .arg(self.config_path())
                .arg("serve")
                .env_remove("ATLASBRIDGE_SERVER_CONFIG")
                .env("ATLASBRIDGE_LOG", "info,atlasbridge_server=debug")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .expect("spawn atlasbridge-server");
            let mut pause = Duration::from_millis(5);
            loop {
                if http_status(self.address, "/readyz") == Some(200) {
                    self.child = Some(child);
                    return;
                }
                if let Some(status) = child.try_wait().expect("poll the server") {
                    assert!(
                        Instant::now() < deadline,
                        "atlasbridge-server exited with {status}:\n{}",
                        self.log()
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "atlasbridge-server not ready in time:\n{}",
                    self.log()
                );
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no shutdown, no drain, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit: whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let mut child = self.child.take().expect("server running");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("poll the server") {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A start that is expected to fail: its exit status and log.
    pub fn launch_expecting_failure(&self) -> (bool, String) {
        let output = Command::new(SERVER)
            .arg("--config")
            .arg(self.config_path())
            .arg("serve")
            .env_remove("ATLASBRIDGE_SERVER_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run atlasbridge-server");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- atlasbridge-server log ---\n{}", self.log());
        }
    }
}

/// The status of a plain GET, `None` when nothing answers.
pub fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until `condition` holds, polling with a growing pause; fails the test at the deadline.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    let mut pause = Duration::from_millis(5);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The directory the test binaries and `atlasbridged` are built into.
pub fn target_dir() -> &'static Path {
    Path::new(SERVER)
        .parent()
        .expect("the server binary is in a directory")
}
