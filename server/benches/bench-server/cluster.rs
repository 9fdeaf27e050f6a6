//! The benchmark's own database on the cluster of `scripts/postgres.sh`, and the release
//! `atlasbridge-server` serving it on 127.0.0.1.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

/// The database name; dropped first if a run before was interrupted.
const DATABASE: &str = "atlasbridge_bench";

/// The benchmark's database: created fresh, dropped at the end.
pub(crate) struct Database {
    /// The owner role (migrations, the bulk load), on this database.
    pub owner_url: String,
    /// The app role (what the server serves as), on this database.
    pub app_url: String,
    /// The owner role on the cluster's own database (to create and drop this one).
    admin_url: String,
}

impl Database {
    /// A fresh database on the cluster named by `ATLASBRIDGE_TEST_DATABASE_URL` and
    /// `ATLASBRIDGE_TEST_APP_DATABASE_URL` (`eval "$(scripts/postgres.sh url)"`).
    pub(crate) async fn create() -> Self {
        let owner = std::env::var("ATLASBRIDGE_TEST_DATABASE_URL").expect(
            "ATLASBRIDGE_TEST_DATABASE_URL is not set: run scripts/postgres.sh start and eval \"$(scripts/postgres.sh url)\"",
        );
        let app = std::env::var("ATLASBRIDGE_TEST_APP_DATABASE_URL")
            .expect("ATLASBRIDGE_TEST_APP_DATABASE_URL is not set");
        let admin = connect(&owner).await;
        // Two statements: several in one simple query would form a transaction block.
        for statement in [
            format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
            format!("CREATE DATABASE {DATABASE}"),
        ] {
            admin
                .batch_execute(&statement)
                .await
                .expect("create the benchmark database");
        }
        Self {
            owner_url: with_database(&owner, DATABASE),
            app_url: with_database(&app, DATABASE),
            admin_url: owner,
        }
    }

    /// The app role's name.
    pub(crate) fn app_role(&self) -> String {
        let config: tokio_postgres::Config = self.app_url.parse().expect("the app URL");
        config
            .get_user()
            .expect("the app URL names a user")
            .to_owned()
    }

    /// Drops the database (its rows are gigabytes: nothing of a run is kept), once the
    /// sessions of the server and of the app role have gone (the owner may not end them).
    pub(crate) async fn drop_now(self) {
        let admin = connect(&self.admin_url).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pause = Duration::from_millis(5);
        loop {
            let sessions: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&DATABASE],
                )
                .await
                .expect("count the sessions")
                .get(0);
            if sessions == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .await
            .expect("drop the benchmark database");
    }
}

/// A connection as `url`'s role; its driver runs on the current runtime.
pub(crate) async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// `url` with another database.
fn with_database(url: &str, database: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..]
        .find('/')
        .map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or("", |i| &url[path + i..]);
    format!("{}/{database}{query}", &url[..path])
}

/// The postmaster of the cluster, from `$ATLASBRIDGE_PG_DIR/data/postmaster.pid`, to account
/// for its CPU time; `None` when that file cannot be read.
pub(crate) fn postmaster_pid() -> Option<u32> {
    let dir = std::env::var_os("ATLASBRIDGE_PG_DIR")?;
    let text = std::fs::read_to_string(Path::new(&dir).join("data/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// The release server, serving the benchmark's database.
pub(crate) struct Server {
    binary: PathBuf,
    dir: tempfile::TempDir,
    pub address: SocketAddr,
    child: Option<Child>,
}

impl Server {
    /// Migrates `db` with the real `migrate` command and starts `serve`; returns once
    /// `/readyz` answers 200.
    pub(crate) fn start(binary: &Path, db: &Database, pool_size: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bench-server-")
            .tempdir()
            .expect("a temporary directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let config = format!(
            "listen = \"{address}\"\n\
             [database]\nurl = \"{}\"\nowner_url = \"{}\"\napp_role = \"{}\"\npool_size = {pool_size}\n\
             [auth]\njwt_secret = \"bench-secret-bench-secret-bench-secret-0\"\n\
             [runtime]\nmax_connections = 1000\nsigning_key_file = \"{}\"\n\
             [people]\ncookie_secure = false\n",
            db.app_url,
            db.owner_url,
            db.app_role(),
            dir.path().join("server.key").display(),
        );
        std::fs::write(dir.path().join("server.toml"), config).expect("write the server config");
        let mut server = Self {
            binary: binary.to_path_buf(),
            dir,
            address,
            child: None,
        };
        server.run(&["migrate"], "");
        let log = std::fs::File::create(server.dir.path().join("server.log")).expect("a log file");
        let child = Command::new(&server.binary)
            .arg("--config")
            .arg(server.dir.path().join("server.toml"))
            .arg("serve")
            .env_remove("ATLASBRIDGE_SERVER_CONFIG")
            .env(
                "ATLASBRIDGE_LOG",
                std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run `cargo build --release -p atlasbridge-server` first)",
                    server.binary.display()
                )
            });
        server.child = Some(child);
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pause = Duration::from_millis(5);
        while http_status(self.address, "/readyz") != Some(200) {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the server did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Runs a subcommand with `stdin`; its standard output, or the benchmark stops.
    pub(crate) fn run(&self, args: &[&str], stdin: &str) -> String {
        let mut child = Command::new(&self.binary)
            .arg("--config")
            .arg(self.dir.path().join("server.toml"))
            .args(args)
            .env_remove("ATLASBRIDGE_SERVER_CONFIG")
            .env("ATLASBRIDGE_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let output = child.wait_with_output().expect("wait for the command");
        assert!(
            output.status.success(),
            "atlasbridge-server {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    pub(crate) fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/v1/connect", self.address)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- atlasbridge-server log ---\n{}", self.log());
        }
    }
}

/// The status of a plain GET, `None` when nothing answers.
fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
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
