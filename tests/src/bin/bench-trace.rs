//! Benchmarks of the decision trace: the "Decision trace" section of `docs/benchmarks.md` on
//! stdout, progress on stderr (`scripts/bench.sh` runs it with the others and assembles the
//! report).
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p atlasbridge-e2e --bin bench-trace -- [--seconds S] [--entries N]
//!     [--skip-append] [--skip-verify] [--only CLIENTS:IN_FLIGHT]
//! ```
//!
//! - durable appends (`fsync` mode) through the socket with 1, 8 and 32 clients, each with one
//!   request in flight and then with 16 in flight, against a baseline measured in the same run
//!   on the same file system: one `write` + `fdatasync` per entry;
//! - round-trip latency percentiles of every row, and of one client against the socket echo;
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

use atlasbridge_e2e::bench_fixtures::entry_body;
use atlasbridge_protocol::trace::{GENESIS_PREV_HASH, VerifyOptions, seal, verify_path};
use bench_support::{
    Daemon, Load, best_of_three, cores, drive, duration, percentile, record_goal, socket_echo,
    thousands,
};

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
    eprintln!("bench-trace: work directory {}", work.path().display());
    println!("## Decision trace");
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
    let echo = socket_echo(settings.seconds.min(3.0));
    let daemon = Daemon::start(&settings.daemon, &dir, "[daemon]\nmax_connections = 256\n");
    // Warm up: the first segment, the keys, the page cache.
    drive(&daemon.socket, Record, 4, 4, 0.5);
    let line_len = average_line_len(&dir.join("data/trace"));
    let baseline = fsync_baseline(&dir, line_len, settings.seconds.min(3.0));

    let mut rows = Vec::new();
    for window in [1, 16] {
        for clients in [1, 8, 32] {
            if settings.only.is_some_and(|only| only != (clients, window)) {
                continue;
            }
            eprintln!("bench-trace: appends, {clients} × {window}");
            let run = drive(&daemon.socket, Record, clients, window, settings.seconds);
            rows.push((clients, window, run));
        }
    }
    drop(daemon);
    let report = verify_path(&dir.join("data/trace"), &VerifyOptions::default()).unwrap();
    assert!(report.valid, "{report:?}");

    println!();
    println!(
        "### Durable appends (`fsync` mode), {} s per row",
        settings.seconds
    );
    println!();
    println!(
        "Binary: `bench-trace --seconds {}`. Each client is a connection sending \
         `decision.record` (one `auto_reply` entry with a unique prompt and idempotency key); an \
         entry counts when its reply arrived, i.e. after the `fdatasync` that carried it. The \
         clients run on the same cores as the daemon. Baselines in the same run, same file \
         system: one `write` + `fdatasync` per {line_len}-byte line, **{} entries/s** ({} per \
         entry); the socket echo, p50 {}.",
        settings.seconds,
        thousands(baseline),
        duration(Duration::from_secs_f64(1.0 / baseline)),
        duration(percentile(&echo, 0.5)),
    );
    println!();
    println!("| clients | in flight per client | entries/s | × fsync baseline | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    for (clients, window, run) in &rows {
        println!(
            "| {clients} | {window} | {} | {:.1} | {} | {} |",
            thousands(run.rate()),
            run.rate() / baseline,
            duration(run.latency(0.5)),
            duration(run.latency(0.99)),
        );
        if *clients == 32 {
            record_goal(
                &format!("≥ 50,000 durable appends/s, 32 clients × {window} in flight"),
                &format!(
                    "{}/s ({:.1}× one fsync per entry)",
                    thousands(run.rate()),
                    run.rate() / baseline
                ),
                run.rate() >= 50_000.0,
            );
        }
    }
    if let Some((_, _, run)) = rows.iter().find(|(c, w, _)| (*c, *w) == (1, 1)) {
        let sorted = &run.latencies;
        println!();
        println!(
            "Round trip of one client with one request in flight ({} requests): p50 {}, p90 {}, \
             p99 {}, max {}; the p50 is {:.1}× the socket echo's and {:.1}× one bare `fdatasync`.",
            thousands(sorted.len() as f64),
            duration(percentile(sorted, 0.5)),
            duration(percentile(sorted, 0.9)),
            duration(percentile(sorted, 0.99)),
            duration(sorted.last().copied().unwrap_or_default()),
            percentile(sorted, 0.5).as_secs_f64() / percentile(&echo, 0.5).as_secs_f64(),
            percentile(sorted, 0.5).as_secs_f64() * baseline,
        );
    }
    println!();
    println!(
        "Afterwards the daemon's trace held {} entries in {} segments and verified.",
        thousands(report.entries_checked as f64),
        report.segments
    );
}

fn average_line_len(trace: &Path) -> usize {
    let files = atlasbridge_protocol::trace::segment_files(trace, Default::default()).unwrap();
    let text = std::fs::read(&files[0]).unwrap();
    let lines = text.iter().filter(|&&b| b == b'\n').count().max(1);
    text.len() / lines
}

// Verification.

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

    let best = rows[0].1.as_secs_f64();
    let rate = n / best;
    println!();
    println!(
        "### Verification of a {}-entry trace",
        thousands(settings.entries as f64)
    );
    println!();
    println!(
        "{:.0} MB, {:.0} bytes per entry (every field of the trace specification, realistic \
         values), generated in {:.1} s; the file is in the page cache. Best of three runs after \
         a warm-up run. Baseline in the same run: `openssl dgst -sha256` over the same file \
         (hashing alone, one thread).",
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
            "| {label} | {:.3} s | {:.2} M | {} | {:.2} |",
            secs,
            n / secs / 1e6,
            thousands(mb / secs),
            secs / openssl.as_secs_f64()
        );
    }
    record_goal(
        &format!(
            "verify ≥ 1.5 M entries/s ({} entries)",
            thousands(settings.entries as f64)
        ),
        &format!(
            "{:.2} M entries/s, {:.2}× the time of `openssl dgst -sha256`",
            rate / 1e6,
            best / openssl.as_secs_f64()
        ),
        rate >= 1.5e6,
    );
}
