//! `POST /v1/witness` and `atlasbridge trace integrity-check --against-cloud` on the real
//! server: a runtime learns what the server witnessed of its own chain only, and the CLI, through
//! a real daemon, finds where a rewritten local trace parts from it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use atlasbridge_protocol::cloud::messages::Stream;
use atlasbridge_protocol::cloud::witness::{SeqRange, WitnessAnswer, WitnessQuery};
use atlasbridge_protocol::trace::verify::{ChainKind, segment_files};
use serde_json::{Value, json};

use crate::support::daemon::TestDaemon;
use crate::support::runtime::{FakeRuntime, chain, head_of, identity, token};
use crate::support::{DEADLINE, ServerOptions, TestDb, TestServer, eventually, target_dir};

/// `POST /v1/witness` with `token` (none: no header) and a raw body: status and body.
async fn ask(server: &TestServer, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(server.http_url("/v1/witness"))
        .json(&body)
        .timeout(DEADLINE);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("/v1/witness answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn witnessed(server: &TestServer, token: &str, query: &WitnessQuery) -> WitnessAnswer {
    let (status, body) = ask(server, Some(token), serde_json::to_value(query).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).expect("a witness answer")
}

fn held(answer: &WitnessAnswer) -> Vec<(u64, String, String)> {
    answer
        .hashes
        .iter()
        .map(|h| (h.seq, h.entry_hash.clone(), h.source.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_learns_what_was_witnessed_of_its_own_chain_and_of_nothing_else() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let key = server.org_with_key("org-a");
    let other_org_key = server.org_with_key("org-b");
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let entries = chain(10);
    runtime.send_batch(Stream::Trace, &entries).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 9);
    let beat = runtime.send_heartbeat(Some(head_of(&entries))).await;
    runtime.ack_of(&beat).await;
    let own = token(&server, "org-a", &key, &runtime.runtime_id).await;

    let answer = witnessed(
        &server,
        &own,
        &WitnessQuery {
            stream: Stream::Trace,
            seqs: vec![9, 0, 5, 12],
            ranges: vec![SeqRange {
                from_seq: 2,
                to_seq: 3,
            }],
        },
    )
    .await;
    assert_eq!(answer.runtime_id, runtime.runtime_id);
    let chain_status = answer.chain.clone().expect("a chain");
    assert_eq!(
        (chain_status.status.as_str(), chain_status.next_seq),
        ("continuous", 10)
    );
    assert_eq!(answer.witness_status.as_deref(), Some("ok"));
    assert_eq!(answer.highest_head, Some(head_of(&entries)));
    let hash = |seq: usize| entries[seq]["entry_hash"].as_str().unwrap().to_owned();
    assert_eq!(
        held(&answer),
        vec![
            (0, hash(0), "entry".to_owned()),
            (2, hash(2), "entry".to_owned()),
            (3, hash(3), "entry".to_owned()),
            (5, hash(5), "entry".to_owned()),
            (9, hash(9), "entry".to_owned()),
            (9, hash(9), "heartbeat".to_owned()),
        ],
        "nothing is held at seq 12"
    );
    // The audit stream is asked separately and is empty.
    let audit = witnessed(
        &server,
        &own,
        &WitnessQuery {
            stream: Stream::Audit,
            seqs: vec![0],
            ranges: vec![],
        },
    )
    .await;
    assert_eq!(audit.chain.map(|c| c.next_seq), Some(0));
    assert!(audit.hashes.is_empty());

    // Another runtime of the org, and a runtime of another org, see nothing of it: the answer
    // is about the token's runtime, under its org's row-level security.
    let query = WitnessQuery {
        stream: Stream::Trace,
        seqs: (0..10).collect(),
        ranges: vec![],
    };
    let stranger_id =
        atlasbridge_protocol::trace::checkpoint::encode_public_key(&identity().verifying_key());
    for (org, api_key) in [("org-a", &key), ("org-b", &other_org_key)] {
        let stranger = token(&server, org, api_key, &stranger_id).await;
        let answer = witnessed(&server, &stranger, &query).await;
        assert_eq!(answer.runtime_id, stranger_id);
        assert_eq!(answer.chain, None, "{org}");
        assert_eq!(answer.witness_status, None);
        assert!(answer.hashes.is_empty(), "{org}");
    }
    let answer = witnessed(&server, &own, &query).await;
    assert_eq!(
        answer.hashes.iter().filter(|h| h.source == "entry").count(),
        10
    );

    // No token, a forged one, one of a revoked key: 401. Oversized or unknown queries: 400.
    let body = serde_json::to_value(&query).unwrap();
    assert_eq!(ask(&server, None, body.clone()).await.0, 401);
    assert_eq!(ask(&server, Some("not.a.jwt"), body.clone()).await.0, 401);
    let (status, error) = ask(
        &server,
        Some(&own),
        json!({"stream": "trace", "seqs": (0..300).collect::<Vec<u64>>()}),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("QUERY_TOO_LARGE"))
    );
    assert!(error["request_id"].is_string(), "{error}");
    let (status, error) = ask(&server, Some(&own), json!({"stream": "trace", "sqes": [1]})).await;
    assert_eq!((status, error["code"].as_str()), (400, Some("BAD_REQUEST")));
    let key_id = key.split('_').nth(1).unwrap();
    let (ok, _, stderr) = server.command(&["revoke-api-key", "org-a", key_id]);
    assert!(ok, "{stderr}");
    let (status, error) = ask(&server, Some(&own), body).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("INVALID_TOKEN"))
    );
}

/// The `atlasbridge` binary: `ATLASBRIDGE_CLI_BIN`, else beside this package's binaries, built
/// with `cargo build -p atlasbridge` when it is not there.
fn cli_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("ATLASBRIDGE_CLI_BIN") {
                return PathBuf::from(path);
            }
            let path = target_dir().join("atlasbridge");
            if !path.exists() {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "-p", "atlasbridge"])
                    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                    .status()
                    .expect("run cargo build -p atlasbridge");
                assert!(status.success(), "cargo build -p atlasbridge failed");
            }
            path
        })
        .clone()
}

/// `atlasbridge --json trace integrity-check --against-cloud` against `daemon`: the exit status
/// and the JSON document.
fn against_cloud(daemon: &TestDaemon) -> (i32, Value) {
    let output = Command::new(cli_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", daemon.dir.path().join("home"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["--json", "trace", "integrity-check", "--against-cloud"])
        .output()
        .expect("run atlasbridge");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let document = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), document)
}

/// Re-seals every entry of the daemon's trace from `from_seq` on with other content, so that the
/// chain still links and hashes: only a witness can tell.
fn rewrite_trace_from(daemon: &TestDaemon, from_seq: u64) {
    let dir = daemon.dir.path().join("data").join("trace");
    let files = segment_files(&dir, ChainKind::Trace).unwrap();
    let mut prev: Option<String> = None;
    for file in files {
        let mut out = Vec::new();
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let mut entry: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
            if entry["seq"].as_u64().unwrap() >= from_seq {
                entry.insert("reply_value".into(), json!("rewritten"));
                if let Some(prev) = &prev {
                    entry.insert("prev_hash".into(), json!(prev));
                }
            }
            entry.remove("entry_hash");
            let sealed = atlasbridge_protocol::trace::seal(&entry);
            prev = Some(sealed.entry_hash.clone());
            out.extend_from_slice(&sealed.line);
        }
        std::fs::write(&file, out).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_agrees_with_the_server_then_finds_where_a_rewritten_trace_forks() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let mut server = TestServer::start(&db, ServerOptions::default());
    let key = server.org_with_key("org-a");
    let mut daemon = TestDaemon::start(&server, "org-a", &key);
    daemon.decide("s1", 60);
    let runtime_id = daemon.runtime_id();
    let local = daemon.local_chain(Stream::Trace);
    eventually("the server holds the whole trace", || {
        let (db, id, local) = (&db, runtime_id.clone(), local.clone());
        async move { db.entries("org-a", &id, Stream::Trace).await == local }
    })
    .await;

    let (code, report) = against_cloud(&daemon);
    let cloud = &report["against_cloud"];
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["valid"], true);
    assert_eq!(cloud["outcome"], "agrees", "{cloud}");
    assert_eq!(cloud["agrees_through"], 59);
    assert_eq!(
        cloud["requests"], 1,
        "a caught-up server agrees at the head at once"
    );
    assert_eq!(cloud["runtime_id"], runtime_id.as_str());
    assert_eq!(cloud["server_chain"]["status"], "continuous");

    // Rewritten from seq 37 with valid hashes and links, and the daemon restarted on it.
    rewrite_trace_from(&daemon, 37);
    daemon.restart(&key);
    // Its hello shows the witness a head that forks, which the server refuses and flags; the
    // daemon keeps its token, which is all a witness query needs.
    eventually("the server flags the rewritten head", || {
        let (db, id) = (&db, runtime_id.clone());
        async move {
            db.runtime("org-a", &id, 30)
                .await
                .is_some_and(|r| r.witness_status == "forked")
        }
    })
    .await;
    let (code, report) = against_cloud(&daemon);
    let cloud = &report["against_cloud"];
    assert_eq!(code, 1, "{report}");
    // Its own checkpoints catch the rewrite too (a thief with the epoch keys could re-sign
    // them); the server's copy is evidence held elsewhere, and names the first changed entry.
    assert_eq!(report["valid"], false);
    assert_eq!(report["error"]["kind"], "checkpoint_mismatch", "{report}");
    assert_eq!(cloud["outcome"], "fork", "{cloud}");
    assert_eq!(cloud["fork"]["seq"], 37);
    assert_eq!(cloud["agrees_through"], 36);
    assert_eq!(cloud["fork"]["source"], "entry");
    assert_eq!(cloud["fork"]["server_hash"], local[37].1.as_str());
    assert_ne!(cloud["fork"]["local_hash"], local[37].1.as_str());
    // 60 entries: the head, then 16 probes, then the last few: logarithmic, not linear.
    assert!(cloud["requests"].as_u64().unwrap() <= 3, "{cloud}");
    // The hello of the rewritten chain showed the witness a forked head.
    assert_eq!(cloud["witness_status"], "forked", "{cloud}");

    // With the server away, the comparison cannot be made: exit 5, not a verdict.
    server.kill();
    let (code, report) = against_cloud(&daemon);
    assert_eq!(code, 5, "{report}");
    assert_eq!(report["error"]["kind"], "rpc_error", "{report}");
}
