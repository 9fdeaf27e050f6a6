//! Socket benchmarks of decisions: the "Decisions" section of `docs/benchmarks.md` on stdout,
//! progress on stderr (`scripts/bench.sh` runs it with the others and assembles the report).
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p atlasbridge-e2e --bin bench-decisions -- [--daemon PATH] [--seconds S]
//!     [--only DURABILITY:CLIENTS:IN_FLIGHT]
//! ```
//!
//! - `decision.evaluate` through the daemon's socket, with a full-autonomy policy, the daemon in
//!   `durability = "fsync"` and then `"none"`: 1 and 32 clients with one request in flight, and
//!   32 clients with 16 in flight; throughput and round-trip percentiles of every row
//!   (`--only DURABILITY:CLIENTS:IN_FLIGHT` runs one row, for profiling);
//! - as baselines in the same run, `edition.get` (no policy, no trace) against the same daemon:
//!   what the socket, the framing and the runtime cost alone; and the socket echo, one byte
//!   between two threads over a Unix socket pair: what the operating system charges for the
//!   round trip's wake-ups;
//! - the one-client round trips again with the benchmark and the daemon on one CPU, where no
//!   wake-up crosses between (virtual) CPUs.
//!
//! Evaluation alone (no socket) is an in-process figure: `benches/in_process.rs`.
//!
//! Everything runs in a temporary directory under `target/`, on the same disk as the build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../bench_support.rs"]
mod bench_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use atlasbridge_protocol::trace::{VerifyOptions, verify_path};
use bench_support::{
    Daemon, Run, drive, duration, percentile, record_goal, socket_echo, thousands, workspace,
};

struct Settings {
    daemon: PathBuf,
    seconds: f64,
    /// Only this `durability:clients:in_flight` row (for profiling).
    only: Option<(String, usize, usize)>,
}

fn settings() -> Settings {
    let mut settings = Settings {
        daemon: workspace().join("target/release/atlasbridged"),
        seconds: 5.0,
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
            "--only" => {
                let row = args.next().expect("--only DURABILITY:CLIENTS:IN_FLIGHT");
                let parts: Vec<&str> = row.split(':').collect();
                let [durability, clients, window] = parts[..] else {
                    panic!("--only DURABILITY:CLIENTS:IN_FLIGHT");
                };
                settings.only = Some((
                    durability.to_owned(),
                    clients.parse().unwrap(),
                    window.parse().unwrap(),
                ));
            }
            other => panic!("unknown argument {other}; see the source for usage"),
        }
    }
    settings
}

fn main() {
    let settings = settings();
    let work = tempfile::Builder::new()
        .prefix("bench-decisions-")
        .tempdir_in(workspace().join("target"))
        .unwrap();
    eprintln!("bench-decisions: work directory {}", work.path().display());
    socket_benchmarks(&settings, work.path());
}

// Decisions through the socket.

/// A full-autonomy policy: the bench's `yes_no`, `high` events get `auto_reply` `y`.
const FULL_POLICY: &str = r#"policy_version: "1"
name: bench-full
autonomy_mode: full
rules:
  - id: deny-destructive
    match:
      contains: '(rm\s+-r|drop\s+(table|database)|reset\s+--hard|push\s+(-f|--force))'
      contains_is_regex: true
    action: {type: deny, reason: destructive command}
  - id: enter
    match: {prompt_type: [confirm_enter], min_confidence: high}
    action: {type: auto_reply, value: "\n"}
  - id: confident-yes
    match: {prompt_type: [yes_no], min_confidence: high}
    action: {type: auto_reply, value: "y"}
defaults:
  no_match: require_human
  low_confidence: deny
"#;

/// What the clients send.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// `decision.evaluate`; the number keeps prompt ids (and so the default idempotency keys)
    /// unique across the runs against one daemon.
    Evaluate(usize),
    /// `edition.get`, which reads no policy and writes no trace: the cost of the socket, the
    /// framing and the runtime alone.
    Noop,
}

impl bench_support::Load for Load {
    fn request(self, client: usize, id: u64) -> Vec<u8> {
        match self {
            Self::Evaluate(run) => format!(
                concat!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"decision.evaluate","params":{{"#,
                    r#""session_id":"bench-session-{client}","prompt_id":"prompt-{run}-{client}-{id}","#,
                    r#""prompt_type":"yes_no","prompt_text":"Continue with the build? [y/n]","#,
                    r#""confidence":"high","tool_id":"claude-code","agent_id":"claude-code"}}}}"#,
                    "\n"
                ),
                id = id,
                client = client,
                run = run,
            ),
            Self::Noop => format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"edition.get\"}}\n"),
        }
        .into_bytes()
    }

    /// A result, and for a decision `auto_reply`.
    fn succeeded(self, line: &str) -> bool {
        line.contains(r#""result":"#)
            && match self {
                Self::Evaluate(_) => line.contains(r#""action":"auto_reply""#),
                Self::Noop => true,
            }
    }
}

/// The rows: (clients, in flight per client).
const ROWS: [(usize, usize); 3] = [(1, 1), (32, 1), (32, 16)];

/// The baseline rows, `edition.get` against the `none` daemon.
const NOOP_ROWS: [(usize, usize); 2] = [(1, 1), (32, 16)];

/// One measured row.
struct Row {
    durability: &'static str,
    method: &'static str,
    clients: usize,
    window: usize,
    run: Run,
}

fn socket_benchmarks(settings: &Settings, work: &Path) {
    let policy = work.join("bench-full.yaml");
    std::fs::write(&policy, FULL_POLICY).unwrap();
    let mut rows = Vec::new();
    let mut traces = Vec::new();
    let only = |durability: &str, clients: usize, window: usize| {
        settings
            .only
            .as_ref()
            .is_none_or(|(d, c, w)| d == durability && (*c, *w) == (clients, window))
    };
    let measure = |socket: &Path, durability, load, clients, window| {
        eprintln!("bench-decisions: {load:?}, {durability}, {clients} × {window}");
        Row {
            durability,
            method: match load {
                Load::Evaluate(_) => "decision.evaluate",
                Load::Noop => "edition.get",
            },
            clients,
            window,
            run: drive(socket, load, clients, window, settings.seconds),
        }
    };
    // The floor under any round trip: the operating system's, measured before the daemons run.
    let echo = socket_echo(settings.seconds.min(3.0));
    for durability in ["fsync", "none"] {
        if !ROWS.iter().any(|&(c, w)| only(durability, c, w)) {
            continue;
        }
        let dir = work.join(format!("socket-{durability}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "[daemon]\nmax_connections = 256\n\n[policy]\nfile = {:?}\n\n[trace]\ndurability = \"{durability}\"\n",
            policy.to_str().unwrap()
        );
        let daemon = Daemon::start(&settings.daemon, &dir, &config);
        // Warm up: the policy, the first segment, the keys, the page cache.
        drive(&daemon.socket, Load::Evaluate(0), 4, 4, 0.5);
        for (index, &(clients, window)) in ROWS.iter().enumerate() {
            if only(durability, clients, window) {
                let load = Load::Evaluate(index + 1);
                rows.push(measure(&daemon.socket, durability, load, clients, window));
            }
        }
        if durability == "none" && settings.only.is_none() {
            for (clients, window) in NOOP_ROWS {
                rows.push(measure(
                    &daemon.socket,
                    durability,
                    Load::Noop,
                    clients,
                    window,
                ));
            }
        }
        drop(daemon);
        let report = verify_path(&dir.join("data/trace"), &VerifyOptions::default()).unwrap();
        assert!(report.valid, "{report:?}");
        traces.push((durability, report.entries_checked));
    }

    // The same one-client round trips with the daemon and the client on one CPU: no wake-up has
    // to cross to another (virtual) CPU, so what is left is the work of the two processes.
    let one_cpu = settings.only.is_none().then(|| {
        bench_support::on_cpu(0, || {
            let dir = work.join("socket-one-cpu");
            std::fs::create_dir_all(&dir).unwrap();
            let config = format!(
                "[policy]\nfile = {:?}\n\n[trace]\ndurability = \"none\"\n",
                policy.to_str().unwrap()
            );
            let daemon = Daemon::start(&settings.daemon, &dir, &config);
            drive(&daemon.socket, Load::Evaluate(0), 1, 1, 0.5);
            let evaluate = measure(&daemon.socket, "none", Load::Evaluate(9), 1, 1);
            let noop = measure(&daemon.socket, "none", Load::Noop, 1, 1);
            drop(daemon);
            (evaluate, noop, socket_echo(settings.seconds.min(3.0)))
        })
    });

    let echo_p50 = percentile(&echo, 0.5);
    println!("## Decisions through the socket");
    println!();
    println!(
        "Binary: `bench-decisions --seconds {}`. Each client is a connection sending \
         `decision.evaluate` with a unique `prompt_id`: a `yes_no`, `high`-confidence prompt under \
         a full-autonomy policy of 3 rules (`auto_reply` `y`). Every reply is checked to be a \
         result that tells the agent `auto_reply`, and counts when it has arrived; a reply is \
         sent only after the trace entry is stored (durable in `fsync` mode). Round trips are \
         timed per request (send to reply, matched by id). The daemon runs once with \
         `[trace] durability = \"fsync\"` and once with `\"none\"`; the same `none` daemon also \
         answers `edition.get`, which reads no policy and writes no trace. The clients run on \
         the same cores as the daemon. Baseline in the same run, before the daemons: the socket \
         echo (one byte back and forth between two threads over a Unix socket pair), p50 {}.",
        settings.seconds,
        duration(echo_p50)
    );
    println!();
    println!(
        "| request | durability | clients | in flight per client | replies/s | p50 | p99 | p50 ÷ echo |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| `{}` | `{}` | {} | {} | {} | {} | {} | {:.1} |",
            row.method,
            row.durability,
            row.clients,
            row.window,
            thousands(row.run.rate()),
            duration(row.run.latency(0.5)),
            duration(row.run.latency(0.99)),
            row.run.latency(0.5).as_secs_f64() / echo_p50.as_secs_f64(),
        );
    }
    println!();
    println!("Round trips of one client with one request in flight, in full:");
    println!();
    println!("| request | durability | placement | requests | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|---|---|");
    let print = |what: &str, durability: &str, placement: &str, sorted: &[Duration]| {
        println!(
            "| {what} | {durability} | {placement} | {} | {} | {} | {} | {} |",
            thousands(sorted.len() as f64),
            duration(percentile(sorted, 0.5)),
            duration(percentile(sorted, 0.9)),
            duration(percentile(sorted, 0.99)),
            duration(sorted.last().copied().unwrap_or_default())
        );
    };
    const ACROSS: &str = "across CPUs";
    for row in rows
        .iter()
        .filter(|row| row.clients == 1 && row.window == 1)
    {
        print(
            &format!("`{}`", row.method),
            &format!("`{}`", row.durability),
            ACROSS,
            &row.run.latencies,
        );
    }
    print("socket echo (no daemon)", "—", ACROSS, &echo);
    if let Some((evaluate, noop, echo)) = &one_cpu {
        const ONE: &str = "one CPU";
        print(
            "`decision.evaluate`",
            "`none`",
            ONE,
            &evaluate.run.latencies,
        );
        print("`edition.get`", "`none`", ONE, &noop.run.latencies);
        print("socket echo (no daemon)", "—", ONE, echo);
    }
    println!();
    println!(
        "\"across CPUs\": every thread free to run on every CPU. \"one CPU\": the benchmark and the \
         daemon it starts pinned to CPU 0 (`sched_setaffinity`), so that no wake-up crosses \
         between CPUs and what is left is the work of the two processes."
    );
    println!();
    for (durability, entries) in &traces {
        println!(
            "After the `{durability}` rows the daemon's trace held {} entries and verified.",
            thousands(*entries as f64)
        );
    }
    println!();

    for row in rows.iter().filter(|row| row.method == "decision.evaluate") {
        if row.durability == "fsync" && row.clients == 32 {
            record_goal(
                &format!(
                    "≥ 50,000 durable decisions/s, 32 clients × {} in flight",
                    row.window
                ),
                &format!("{}/s", thousands(row.run.rate())),
                row.run.rate() >= 50_000.0,
            );
        }
        if row.durability == "none" && row.clients == 1 {
            let p50 = row.run.latency(0.5);
            record_goal(
                "p50 ≤ 25 µs, `decision.evaluate`, durability `none`, one client, across CPUs",
                &format!(
                    "{} (socket echo alone: {})",
                    duration(p50),
                    duration(echo_p50)
                ),
                p50 <= Duration::from_micros(25),
            );
        }
    }
    if let Some((evaluate, _, echo)) = &one_cpu {
        let p50 = evaluate.run.latency(0.5);
        record_goal(
            "p50 ≤ 25 µs, `decision.evaluate`, durability `none`, one client, one CPU",
            &format!(
                "{} (socket echo alone: {})",
                duration(p50),
                duration(percentile(echo, 0.5))
            ),
            p50 <= Duration::from_micros(25),
        );
    }
}
