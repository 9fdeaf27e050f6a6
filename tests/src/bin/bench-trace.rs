//! Benchmarks of the decision trace, printed as the Markdown tables of `docs/benchmarks.md`.
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p atlasbridge-e2e --bin bench-trace -- [--seconds S] [--entries N]
//! ```
//!
//! - durable appends (`fsync` mode) through the socket with 1, 8 and 32 clients, each with one
//!   request in flight and then with 16 in flight, against a baseline measured in the same run
//!   on the same file system: one `write` + `fdatasync` per entry;
//! - round-trip latency percentiles of one client with one request in flight;
//! - verification of a generated N-entry trace (default 1 M), by the fast path on every core,
//!   on one core, and by the slow path, against `openssl dgst -sha256` over the same file.
//!
//! Everything runs in a temporary directory under `target/`, on the same disk as the build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../bench_support.rs"]
mod bench_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atlasbridge_protocol::trace::{GENESIS_PREV_HASH, VerifyOptions, seal, verify_path};
use bench_support::{Daemon, Load, best_of_three, cores, drive, percentile};
use serde_json::{Map, Value, json};

struct Settings {
    daemon: PathBuf,
    seconds: f64,
    entries: u64,
    skip_verify: bool,
    skip_append: bool,
    /// Only this `clients:in_flight` row (for profiling).
    only: Option<(usize, usize)>,
}

fn settings() -> Settings {
    let mut settings = Settings {
        daemon: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/atlasbridged"),
        seconds: 5.0,
        entries: 1_000_000,
        skip_verify: false,
        skip_append: false,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--daemon" => settings.daemon = PathBuf::from(args.next().expect("--daemon PATH")),
            "--seconds" => {
                settings.seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds S");
            }
            "--entries" => {
                settings.entries = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--entries N");
            }
            "--skip-verify" => settings.skip_verify = true,
            "--skip-append" => settings.skip_append = true,
            "--only" => {
                let row = args.next().expect("--only CLIENTS:IN_FLIGHT");
                let (c, w) = row.split_once(':').expect("--only CLIENTS:IN_FLIGHT");
                settings.only = Some((c.parse().unwrap(), w.parse().unwrap()));
            }
            other => panic!("unknown argument {other}; see the source for usage"),
        }
    }
    settings
}

fn main() {
    let settings = settings();
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let work = tempfile::Builder::new()
        .prefix("bench-trace-")
        .tempdir_in(&target)
        .unwrap();
    println!(
        "machine: {} cores; work directory {}",
        cores(),
        work.path().display()
    );
    if !settings.skip_append {
        append_benchmarks(&settings, work.path());
    }
    if !settings.skip_verify {
        verify_benchmarks(&settings, work.path());
    }
}

// Appends.

/// `decision.record` of one `auto_reply`, with a unique prompt and idempotency key.
#[derive(Clone, Copy)]
struct Record;

impl Load for Record {
    fn request(self, client: usize, id: u64) -> Vec<u8> {
        format!(
            concat!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"decision.record","params":{{"#,
                r#""session_id":"bench-session-{client}","agent_id":"claude-code","#,
                r#""prompt_id":"prompt-{client}-{id}","prompt_type":"yes_no","confidence":"high","#,
                r#""action_taken":"auto_reply","reply_value":"y","idempotency_key":"idem-{client}-{id}"}}}}"#,
                "\n"
            ),
            id = id,
            client = client
        )
        .into_bytes()
    }

    fn succeeded(self, line: &str) -> bool {
        line.contains(r#""result":"#)
    }
}

/// One `write` + `fdatasync` per entry, in the same file system, with a line of the daemon's size.
fn fsync_baseline(dir: &Path, line_len: usize, seconds: f64) -> f64 {
    let path = dir.join("baseline.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let mut line = vec![b'x'; line_len.max(2) - 1];
    line.push(b'\n');
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        file.write_all(&line).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn append_benchmarks(settings: &Settings, work: &Path) {
    let dir = work.join("append");
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = Daemon::start(&settings.daemon, &dir, "[daemon]\nmax_connections = 256\n");
    // Warm up: the first segment, the keys, the page cache.
    drive(&daemon.socket, Record, 4, 4, 0.5);
    let line_len = average_line_len(&dir.join("data/trace"));
    let baseline = fsync_baseline(&dir, line_len, settings.seconds.min(3.0));

    println!();
    println!(
        "### Durable appends (`fsync` mode), {} s per row",
        settings.seconds
    );
    println!();
    println!(
        "Baseline in the same run: one `write` + `fdatasync` per {line_len}-byte line: **{baseline:.0} entries/s**."
    );
    println!();
    println!("| clients | in flight per client | entries/s | × baseline |");
    println!("|---|---|---|---|");
    let mut single = None;
    for window in [1, 16] {
        for clients in [1, 8, 32] {
            if settings.only.is_some_and(|only| only != (clients, window)) {
                continue;
            }
            let run = drive(&daemon.socket, Record, clients, window, settings.seconds);
            let rate = run.rate();
            println!(
                "| {clients} | {window} | {rate:.0} | {:.1} |",
                rate / baseline
            );
            if clients == 1 && window == 1 {
                single = Some(run);
            }
        }
    }
    if let Some(mut run) = single {
        run.latencies.sort();
        println!();
        println!(
            "Round trip, one client, one request in flight ({} requests):",
            run.latencies.len()
        );
        println!();
        println!("| p50 | p90 | p99 | max |");
        println!("|---|---|---|---|");
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {} | {} | {} | {} |",
            ms(percentile(&run.latencies, 0.5)),
            ms(percentile(&run.latencies, 0.9)),
            ms(percentile(&run.latencies, 0.99)),
            ms(*run.latencies.last().unwrap())
        );
    }
    drop(daemon);
    let report = verify_path(&dir.join("data/trace"), &VerifyOptions::default()).unwrap();
    println!();
    println!(
        "After the run the daemon's trace holds {} entries in {} segments and verifies: {}.",
        report.entries_checked, report.segments, report.valid
    );
    assert!(report.valid, "{report:?}");
}

fn average_line_len(trace: &Path) -> usize {
    let files = atlasbridge_protocol::trace::segment_files(trace, Default::default()).unwrap();
    let text = std::fs::read(&files[0]).unwrap();
    let lines = text.iter().filter(|&&b| b == b'\n').count().max(1);
    text.len() / lines
}

// Verification.

fn entry_body(seq: u64, prev: &str) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "trace_version": 2,
        "seq": seq,
        "entry_id": format!("0193a1b2-c3d4-7e5f-8a9b-{seq:012x}"),
        "timestamp": "2026-11-24T01:02:00.000000Z",
        "session_id": format!("sess-{}", seq % 97),
        "agent_id": "claude-code",
        "prompt_id": format!("prompt-{seq}"),
        "prompt_type": "yes_no",
        "policy_name": "vector-policy",
        "policy_version": "1",
        "policy_hash": "9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f",
        "matched_rule": "allow-yes-no",
        "autonomy_mode": "full",
        "policy_action": "auto_reply",
        "action_taken": "auto_reply",
        "reply_value": "y",
        "confidence": "high",
        "risk_level": "low",
        "risk_reasons": ["auto_reply with high confidence"],
        "escalation_status": "",
        "human_actor": "",
        "ci_status_snapshot": "passing",
        "branch": "feature/x",
        "idempotency_key": format!("idem-{seq}"),
        "replay_safe": true,
        "prev_hash": prev,
    }) else {
        unreachable!()
    };
    map
}

fn write_trace(path: &Path, entries: u64) -> u64 {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut prev = GENESIS_PREV_HASH.to_owned();
    let mut bytes = 0u64;
    for seq in 0..entries {
        let sealed = seal(&entry_body(seq, &prev));
        out.write_all(&sealed.line).unwrap();
        bytes += sealed.line.len() as u64;
        prev = sealed.entry_hash;
    }
    out.flush().unwrap();
    bytes
}

fn verify_benchmarks(settings: &Settings, work: &Path) {
    let dir = work.join("verify");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("decisions-000000000000.jsonl");
    let started = Instant::now();
    let bytes = write_trace(&file, settings.entries);
    let generated = started.elapsed();
    let mb = bytes as f64 / 1e6;
    let n = settings.entries as f64;

    let mut rows = Vec::new();
    let mut check = |label: String, options: VerifyOptions| {
        let time = best_of_three(|| {
            let report = verify_path(&file, &options).unwrap();
            assert!(report.valid && report.entries_checked == settings.entries);
        });
        rows.push((label, time));
    };
    check(
        format!("fast path, {} threads", cores()),
        VerifyOptions::default(),
    );
    check(
        "fast path, 1 thread".to_owned(),
        VerifyOptions {
            threads: 1,
            ..VerifyOptions::default()
        },
    );
    check(
        format!("slow path (re-canonicalise), {} threads", cores()),
        VerifyOptions {
            recanonicalise: true,
            ..VerifyOptions::default()
        },
    );
    let openssl = best_of_three(|| {
        let status = Command::new("openssl")
            .args(["dgst", "-sha256"])
            .arg(&file)
            .stdout(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success());
    });

    println!();
    println!(
        "### Verification of a {}-entry trace ({:.0} MB, {:.0} bytes/entry; generated in {:.1} s), file in the page cache",
        settings.entries,
        mb,
        bytes as f64 / n,
        generated.as_secs_f64()
    );
    println!();
    println!("| verifier | time | entries/s | MB/s | time ÷ openssl |");
    println!("|---|---|---|---|---|");
    for (label, time) in rows.iter().chain(std::iter::once(&(
        "`openssl dgst -sha256` (hash only, 1 thread)".to_owned(),
        openssl,
    ))) {
        let secs = time.as_secs_f64();
        println!(
            "| {label} | {:.3} s | {:.2} M | {:.0} | {:.2} |",
            secs,
            n / secs / 1e6,
            mb / secs,
            secs / openssl.as_secs_f64()
        );
    }
}
