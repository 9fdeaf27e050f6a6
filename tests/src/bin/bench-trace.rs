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

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use atlasbridge_protocol::trace::{GENESIS_PREV_HASH, VerifyOptions, seal, verify_path};
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

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

// Appends.

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(binary: &Path, dir: &Path) -> Self {
        let socket = dir.join("run/d.sock");
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        std::fs::set_permissions(
            socket.parent().unwrap(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let config = dir.join("config.toml");
        std::fs::write(&config, "[daemon]\nmax_connections = 256\n").unwrap();
        let child = Command::new(binary)
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config)
            .arg("--edition")
            .arg("pro")
            .env("ATLASBRIDGE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run `cargo build --release` first)",
                    binary.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, socket }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
    }
}

/// One `decision.record` request line. Built by hand: the clients share the two cores with the
/// daemon, and what they spend is not the daemon's throughput.
fn request(id: u64, client: usize) -> Vec<u8> {
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

struct Run {
    entries: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// `clients` connections, each keeping `window` requests in flight, for `seconds`.
fn drive(socket: &Path, clients: usize, window: usize, seconds: f64) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|client| {
            let stop = Arc::clone(&stop);
            let socket = socket.to_path_buf();
            std::thread::spawn(move || {
                let stream = UnixStream::connect(&socket).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let mut sent_at = std::collections::VecDeque::new();
                let mut latencies = Vec::new();
                let mut next_id = 0u64;
                let mut done = 0u64;
                let mut line = String::new();
                loop {
                    while sent_at.len() < window && !stop.load(Ordering::Relaxed) {
                        writer.write_all(&request(next_id, client)).unwrap();
                        sent_at.push_back(Instant::now());
                        next_id += 1;
                    }
                    if sent_at.is_empty() {
                        break;
                    }
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    assert!(line.contains(r#""result":"#), "append failed: {line}");
                    // Replies may come back in any order; with one in flight the pairing is exact.
                    let sent = sent_at.pop_front().unwrap();
                    if window == 1 {
                        latencies.push(sent.elapsed());
                    }
                    done += 1;
                }
                (done, latencies)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut entries = 0;
    let mut latencies = Vec::new();
    for handle in handles {
        let (done, mut l) = handle.join().unwrap();
        entries += done;
        latencies.append(&mut l);
    }
    Run {
        entries,
        elapsed: started.elapsed(),
        latencies,
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn append_benchmarks(settings: &Settings, work: &Path) {
    let dir = work.join("append");
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = Daemon::start(&settings.daemon, &dir);
    // Warm up: the first segment, the keys, the page cache.
    drive(&daemon.socket, 4, 4, 0.5);
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
            let run = drive(&daemon.socket, clients, window, settings.seconds);
            let rate = run.entries as f64 / run.elapsed.as_secs_f64();
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

/// The best of three, after one run that warms the page cache.
fn best_of_three(mut run: impl FnMut()) -> Duration {
    run();
    (0..3)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed()
        })
        .min()
        .unwrap()
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
