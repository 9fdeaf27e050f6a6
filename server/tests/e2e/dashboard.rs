//! The web dashboard in a real browser: `dashboard/e2e/dashboard.mjs` drives headless Chromium
//! (Debian's `chromium`, through `playwright-core`) against the real server on a fresh database,
//! and asks this harness for a real `atlasbridged` when it wants the runtime to appear. The
//! script checks what a person sees; this test then checks, without the browser, that what the
//! person did in it reached the runtime.
//!
//! Needs `npm ci && npm run build` in `dashboard/` and `chromium` (or `CHROMIUM`). Without them
//! the test says why and passes as skipped, except under CI, where it fails.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use atlasbridge_protocol::cloud::messages::Stream;
use atlasbridge_protocol::trace::GENESIS_PREV_HASH;

use crate::support::api::Api;
use crate::support::daemon::TestDaemon;
use crate::support::runtime::{FakeRuntime, chain_from};
use crate::support::{ServerOptions, TestDb, TestServer, eventually};

const ORG: &str = "acme";
const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// A viewer who signs in by SSO only.
const SSO_EMAIL: &str = "sso-viewer@example.com";
/// The whole browser run; it takes well under a minute.
const BROWSER_DEADLINE: Duration = Duration::from_secs(240);

fn dashboard_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboard")
}

/// The browser, the script's packages and the built app, or why one is missing.
fn prerequisites() -> Result<PathBuf, String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} is missing: `apt-get install chromium`",
            chromium.display()
        ));
    }
    let dir = dashboard_dir();
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node is not installed".to_owned());
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Err("dashboard/node_modules is missing: `npm ci` in dashboard/".to_owned());
    }
    if !dir.join("dist/index.html").exists() {
        return Err("dashboard/dist is missing: `npm run build` in dashboard/".to_owned());
    }
    Ok(chromium)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_follows_a_decision_and_deploys_a_policy_in_the_browser() {
    let chromium = match prerequisites() {
        Ok(path) => path,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but the browser test cannot run: {why}"
            );
            eprintln!("skipping: {why}");
            return;
        }
    };
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    // Single sign-on through the OIDC provider of oidc.rs, for a viewer made beforehand: the
    // callback's address is the server's own, known once its port is.
    let provider = crate::oidc::start_provider().await;
    *provider.person.lock().unwrap() = ("sso-viewer".into(), SSO_EMAIL.into());
    let mut server = TestServer::unstarted(&db, ServerOptions::default());
    let oidc = format!(
        "\n[oidc]\nissuer = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\
         redirect_uri = \"{}\"\norg_id = \"{ORG}\"\nunknown_users = \"refuse\"\nafter_login = \"/\"\n",
        provider.issuer,
        crate::oidc::CLIENT_ID,
        crate::oidc::CLIENT_SECRET,
        server.http_url("/v1/auth/oidc/callback"),
    );
    let mut config = std::fs::read_to_string(server.config_path()).expect("the server config");
    config.push_str(&oidc);
    std::fs::write(server.config_path(), config).expect("write the server config");
    server.launch();
    let key = server.org_with_key(ORG);
    server.user(ORG, EMAIL, "owner", PASSWORD);
    let (ok, _, stderr) = server.command(&[
        "create-user",
        "--org",
        ORG,
        "--email",
        SSO_EMAIL,
        "--role",
        "viewer",
    ]);
    assert!(ok, "create-user {SSO_EMAIL}: {stderr}");

    // Two hand-written runtimes whose chains the audit trail must not show as sound: one with
    // seqs 4..=6 missing (a gap), one whose seq 3 was changed after sealing (broken there).
    let mut gappy = FakeRuntime::connect(&server, ORG, &key).await;
    let entries = chain_from(0, GENESIS_PREV_HASH, 10, "gappy");
    gappy.send_batch(Stream::Trace, &entries[..4]).await;
    assert_eq!(gappy.ack_through(Stream::Trace).await, 3);
    gappy.send_batch(Stream::Trace, &entries[7..]).await;
    let mut tampered = FakeRuntime::connect(&server, ORG, &key).await;
    let mut entries = chain_from(0, GENESIS_PREV_HASH, 6, "tampered");
    entries[3]["action_taken"] = json!("deny");
    tampered.send_batch(Stream::Trace, &entries).await;
    for (runtime, status) in [(&gappy, "gap"), (&tampered, "broken")] {
        let id = runtime.runtime_id.clone();
        eventually(&format!("the {status} chain is judged"), || {
            let (db, id) = (&db, id.clone());
            async move {
                let held = db.entries(ORG, &id, Stream::Trace).await.len();
                let chain = db.chain_status(ORG, &id, Stream::Trace).await;
                held == if status == "gap" { 7 } else { 6 }
                    && chain.is_some_and(|c| c.status == status)
            }
        })
        .await;
    }

    let mut node = Command::new("node")
        .arg("e2e/dashboard.mjs")
        .current_dir(dashboard_dir())
        .env("DASHBOARD_URL", server.http_url(""))
        .env("DASHBOARD_ORG", ORG)
        .env("DASHBOARD_EMAIL", EMAIL)
        .env("DASHBOARD_PASSWORD", PASSWORD)
        .env("DASHBOARD_SSO_EMAIL", SSO_EMAIL)
        .env("DASHBOARD_GAP_RUNTIME", &gappy.runtime_id)
        .env("DASHBOARD_BROKEN_RUNTIME", &tampered.runtime_id)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node e2e/dashboard.mjs");
    let mut to_script = node.stdin.take().expect("the script's stdin");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = node.stdout.take().expect("the script's stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // Follow the script's output; start the daemon when it asks for it.
    let deadline = Instant::now() + BROWSER_DEADLINE;
    let mut daemon: Option<TestDaemon> = None;
    let mut output = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) => {
                println!("{line}");
                if line.trim() == "@@start-daemon" {
                    // On the built-in default until the cloud distributes a policy to it.
                    let started = TestDaemon::start_following_the_cloud(&server, ORG, &key);
                    started.wait_connected();
                    let answer = json!({
                        "socket": started.socket(),
                        "runtime_id": started.runtime_id(),
                    });
                    writeln!(to_script, "{answer}").expect("answer the script");
                    to_script.flush().expect("flush");
                    daemon = Some(started);
                } else if line.trim() == "@@stop-server" {
                    // An outage, as a crash: the page's live stream must reconnect by itself.
                    server.kill();
                    writeln!(to_script, "stopped").expect("answer the script");
                    to_script.flush().expect("flush");
                } else if line.trim() == "@@start-server" {
                    server.launch();
                    writeln!(to_script, "started").expect("answer the script");
                    to_script.flush().expect("flush");
                }
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = node.try_wait().expect("poll node") {
                    // Drain what is left of its output.
                    while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
                        println!("{line}");
                        output.push(line);
                    }
                    assert!(
                        status.success(),
                        "the browser test failed ({status}); screenshots in dashboard/test-results/screenshots\n--- server log ---\n{}",
                        server.log()
                    );
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = node.kill();
                    let _ = node.wait();
                    panic!(
                        "the browser test took longer than {BROWSER_DEADLINE:?}\n--- server log ---\n{}",
                        server.log()
                    );
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = node.wait().expect("wait for node");
                assert!(status.success(), "the browser test failed ({status})");
                break;
            }
        }
    }
    assert!(
        output
            .iter()
            .any(|l| l.contains("passed:") && l.contains("screenshots")),
        "the script ended without saying it passed"
    );

    // What the clicks did, seen without the browser: the policy the person distributed is the
    // one the daemon runs, and its latest decision was made by it.
    let daemon = daemon.expect("the script asked for the daemon");
    let api = Api::new(&server);
    let person = api.login(ORG, EMAIL, PASSWORD).await;
    let policy = api.get("/v1/policies/dashboard-e2e", person.bearer()).await;
    assert_eq!(policy.status, 200, "{:?}", policy.body);
    let latest = policy.body["latest_version"].as_str().expect("a version");
    let hash = policy.body["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["version"] == latest)
        .expect("the latest version listed")["content_hash"]
        .as_str()
        .expect("its hash")
        .to_owned();
    assert_eq!(daemon.policy_status()["policy_hash"], hash.as_str());
    let decisions = api
        .get("/v1/decisions?session_id=dash-live-2", person.bearer())
        .await;
    assert_eq!(decisions.status, 200, "{:?}", decisions.body);
    let decision = &decisions.body["decisions"][0];
    assert_eq!(decision["action"], "auto_reply", "{decision}");
    assert_eq!(
        decision["entry"]["policy_hash"],
        hash.as_str(),
        "{decision}"
    );
    // The checkpoints the runtime page lists are the runtime's, as the server judged them.
    let runtime = api
        .get(
            &format!(
                "/v1/runtimes/{}",
                crate::support::api::segment(&daemon.runtime_id())
            ),
            person.bearer(),
        )
        .await;
    assert_eq!(runtime.status, 200, "{:?}", runtime.body);
    let checkpoints = runtime.body["checkpoints"].as_array().expect("checkpoints");
    assert!(!checkpoints.is_empty(), "{}", runtime.body);
    assert!(
        checkpoints.iter().all(|c| c["verdict"] == "verified"),
        "{}",
        runtime.body
    );
    let shots = std::fs::read_dir(dashboard_dir().join("test-results/screenshots"))
        .expect("the screenshots directory")
        .count();
    assert!(shots >= 15, "only {shots} screenshots were saved");
}
