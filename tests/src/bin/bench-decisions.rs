//! Benchmarks of policy decisions, printed as the Markdown tables of `docs/benchmarks.md`.
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p atlasbridge-e2e --bin bench-decisions -- [--daemon PATH] [--seconds S]
//!     [--only-eval | --only-socket | --only DURABILITY:CLIENTS:IN_FLIGHT]
//! ```
//!
//! - evaluation alone ([`Evaluator::evaluate`], no daemon), in ns per decision, for every policy
//!   of `examples/policies/` and for a generated 1,000-rule v1 policy that most events traverse
//!   to its last rule; best of three runs of 200,000 evaluations over a fixed, varied set of
//!   events;
//! - `decision.evaluate` through the daemon's socket, with a full-autonomy policy, the daemon in
//!   `durability = "fsync"` and then `"none"`: 1 and 32 clients with one request in flight, and
//!   32 clients with 16 in flight; round-trip percentiles of one client
//!   (`--only DURABILITY:CLIENTS:IN_FLIGHT` runs one row, for profiling);
//! - as baselines, `edition.get` (no policy, no trace) against the same daemon: what the socket,
//!   the framing and the runtime cost alone; and a 1-byte ping-pong between two threads over a
//!   Unix socket pair: what the operating system charges for the round trip's wake-ups;
//! - the one-client round trips again with the benchmark and the daemon on one CPU, where no
//!   wake-up crosses between (virtual) CPUs.
//!
//! Everything runs in a temporary directory under `target/`, on the same disk as the build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../bench_support.rs"]
mod bench_support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::policy::evaluate::{Evaluator, Event};
use atlasbridge_protocol::policy::load_file;
use atlasbridge_protocol::trace::{VerifyOptions, verify_path};
use bench_support::{Daemon, drive, percentile, thousands, workspace};

struct Settings {
    daemon: PathBuf,
    seconds: f64,
    eval: bool,
    socket: bool,
    /// Only this `durability:clients:in_flight` row (for profiling).
    only: Option<(String, usize, usize)>,
}

fn settings() -> Settings {
    let mut settings = Settings {
        daemon: workspace().join("target/release/atlasbridged"),
        seconds: 5.0,
        eval: true,
        socket: true,
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
            "--only-eval" => settings.socket = false,
            "--only-socket" => settings.eval = false,
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
                settings.eval = false;
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
    println!(
        "machine: {} cores; work directory {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        work.path().display()
    );
    if settings.eval {
        eval_benchmarks(work.path());
    }
    if settings.socket {
        socket_benchmarks(&settings, work.path());
    }
}

// Evaluation alone.

/// Evaluations per timed run.
const EVALUATIONS: usize = 200_000;

/// Rules of the generated policy.
const GENERATED_RULES: usize = 1_000;

/// The events every policy is measured on: each prompt type, each confidence, destructive and
/// harmless texts, short and long, two tools, with and without the `ci` session tag.
fn events() -> Vec<Event<'static>> {
    const LONG: &str = "The agent wants to run the following command in /home/dev/atlas:\n\n  \
        cargo test --workspace --all-features -- --test-threads 2\n\nIt will compile 214 crates \
        and run 1,873 tests; the last run took 3 min 12 s and passed. Output is streamed to the \
        terminal and written to target/test.log. Allow this command to run? [y/n]";
    let event = |prompt_text, prompt_type, confidence, tool_id, session_tag| Event {
        prompt_text,
        prompt_type,
        confidence,
        tool_id,
        repo: "/home/dev/atlas",
        session_tag,
    };
    use Confidence::{High, Low, Medium};
    vec![
        event("Continue? [y/n]", "yes_no", High, "claude-code", ""),
        event(
            "Overwrite the existing config file? [y/n]",
            "yes_no",
            High,
            "claude-code",
            "",
        ),
        event(
            "Run `rm -rf build/` to clean? [y/n]",
            "yes_no",
            High,
            "claude-code",
            "",
        ),
        event(
            "Press Enter to continue",
            "confirm_enter",
            High,
            "claude-code",
            "",
        ),
        event(
            "Press Enter to continue",
            "confirm_enter",
            Medium,
            "codex",
            "ci",
        ),
        event(
            "Which test suite? 1) unit 2) integration 3) all",
            "multiple_choice",
            High,
            "claude-code",
            "ci",
        ),
        event(
            "Enter the commit message:",
            "free_text",
            Medium,
            "claude-code",
            "",
        ),
        event(
            "Apply the migration to the local database? (y/n)",
            "yes_no",
            Medium,
            "codex",
            "",
        ),
        event(
            "Do you want to delete the temporary branch? [y/N]",
            "yes_no",
            High,
            "claude-code",
            "",
        ),
        event(
            "git push --force origin main? [y/n]",
            "yes_no",
            High,
            "codex",
            "ci",
        ),
        event(
            "Install 3 new dependencies? [Y/n]",
            "yes_no",
            Low,
            "claude-code",
            "",
        ),
        event(
            "Select a model: 1) small 2) large",
            "multiple_choice",
            Low,
            "codex",
            "",
        ),
        event(
            "Name of the new module:",
            "free_text",
            High,
            "claude-code",
            "",
        ),
        event(
            "Proceed with the deploy to staging? [y/n]",
            "yes_no",
            High,
            "claude-code",
            "ci",
        ),
        event(
            "Allow network access for this command? [y/n]",
            "yes_no",
            Medium,
            "codex",
            "ci",
        ),
        event(LONG, "yes_no", High, "claude-code", ""),
    ]
}

/// A v1 policy of [`GENERATED_RULES`] rules: plain `contains` texts that no event holds (behind
/// varied prompt types, confidences and tools, so that some rules fail before their text is
/// searched), a regex every 100 rules, `any_of` blocks, two rules a few events reach (rule 200,
/// `staging`; rule 600, `commit message`), and a last rule that catches everything.
fn generated_policy() -> String {
    const WORDS: [&str; 12] = [
        "install", "upgrade", "migrate", "format", "publish", "rebase", "download", "compile",
        "restart", "approve", "archive", "rotate",
    ];
    const TYPES: [&str; 6] = [
        "[yes_no]",
        "[yes_no, confirm_enter]",
        "['*']",
        "[multiple_choice]",
        "[free_text, yes_no]",
        "['*']",
    ];
    const CONFIDENCES: [&str; 3] = ["low", "medium", "high"];
    let mut out =
        String::from("policy_version: \"1\"\nname: generated-1000\nautonomy_mode: full\nrules:\n");
    for i in 0..GENERATED_RULES {
        let word = WORDS[i % WORDS.len()];
        let types = TYPES[i % TYPES.len()];
        let confidence = CONFIDENCES[i % CONFIDENCES.len()];
        let rule = match i {
            200 => "    match: {prompt_type: [yes_no], contains: staging}\n    \
                    action: {type: auto_reply, value: \"y\"}\n"
                .to_owned(),
            600 => "    match: {prompt_type: [free_text], contains: commit message}\n    \
                    action: {type: require_human}\n"
                .to_owned(),
            _ if i == GENERATED_RULES - 1 => {
                "    match: {}\n    action: {type: require_human, message: catch-all}\n".to_owned()
            }
            _ if i % 100 == 50 => format!(
                "    match:\n      contains: '({word}|deploy)\\s+to\\s+prod-{i}\\b'\n      \
                 contains_is_regex: true\n    action: {{type: deny, reason: production}}\n"
            ),
            _ if i % 25 == 10 => format!(
                "    match:\n      any_of:\n        \
                 - {{prompt_type: {types}, contains: {word} step {i}}}\n        \
                 - {{prompt_type: {types}, contains: {word} stage {i}}}\n    \
                 action: {{type: notify_only}}\n"
            ),
            _ if i % 10 == 3 => format!(
                "    match: {{tool_id: aider, contains: {word} {i}}}\n    \
                 action: {{type: deny}}\n"
            ),
            _ => format!(
                "    match: {{prompt_type: {types}, min_confidence: {confidence}, \
                 contains: {word} item {i}}}\n    action: {{type: auto_reply, value: \"y\"}}\n"
            ),
        };
        writeln!(out, "  - id: r{i:04}").unwrap();
        out.push_str(&rule);
    }
    out.push_str("defaults:\n  no_match: require_human\n  low_confidence: deny\n");
    out
}

fn eval_benchmarks(work: &Path) {
    let generated = work.join("generated-1000.yaml");
    std::fs::write(&generated, generated_policy()).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace().join("examples/policies"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.push(generated);
    let events = events();

    println!();
    println!(
        "### Evaluation alone: `Evaluator::evaluate`, best of 3 runs of {EVALUATIONS} evaluations \
         over {} events",
        events.len()
    );
    println!();
    println!(
        "| policy | rules | rules tried per event (mean / max) | ns per decision | decisions/s |"
    );
    println!("|---|---|---|---|---|");
    let mut distributions = Vec::new();
    for file in &files {
        let loaded = load_file(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = loaded.policy.name.clone();
        let rules = loaded.policy.rules.len();
        let evaluator = Evaluator::new(loaded.policy).unwrap();

        // Where each event is decided: a rule's index, or a default after trying every rule.
        let mut decided_at: BTreeMap<String, usize> = BTreeMap::new();
        let mut tried = Vec::new();
        for event in &events {
            let decision = evaluator.evaluate(event);
            let index = decision.rule.map(|rule| {
                evaluator
                    .policy()
                    .rules
                    .iter()
                    .position(|r| r.id == rule.id)
                    .unwrap()
            });
            tried.push(index.map_or(rules, |i| i + 1));
            let label = match index {
                Some(i) => format!("rule {i} (`{}`)", decision.matched_rule()),
                None => "a default (all rules tried)".to_owned(),
            };
            *decided_at.entry(label).or_default() += 1;
        }
        let mean_tried = tried.iter().sum::<usize>() as f64 / tried.len() as f64;
        let max_tried = tried.iter().max().copied().unwrap_or(0);

        let run = |n: usize| {
            let started = Instant::now();
            for event in events.iter().cycle().take(n) {
                black_box(evaluator.evaluate(black_box(event)));
            }
            started.elapsed()
        };
        run(EVALUATIONS / 10);
        let best = (0..3).map(|_| run(EVALUATIONS)).min().unwrap();
        let ns = best.as_secs_f64() * 1e9 / EVALUATIONS as f64;
        println!(
            "| `{name}` ({}) | {rules} | {mean_tried:.1} / {max_tried} | {} | {} |",
            file.file_name().unwrap().to_string_lossy(),
            thousands(ns),
            thousands(1e9 / ns),
        );
        distributions.push((name, decided_at));
    }
    println!();
    println!("Where the {} events are decided:", events.len());
    println!();
    for (name, decided_at) in distributions {
        let parts: Vec<String> = decided_at
            .iter()
            .map(|(label, count)| format!("{label}: {count}"))
            .collect();
        println!("- `{name}`: {}", parts.join("; "));
    }
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

/// Round trips of one byte over a Unix socket pair between two threads, sorted: what the
/// operating system (here, a VM) charges for waking a thread and being woken, twice.
fn ping_pong(seconds: f64) -> Vec<Duration> {
    use std::io::Read;
    let (mut near, mut far) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8];
        while far.read_exact(&mut byte).is_ok() {
            far.write_all(&byte).unwrap();
        }
    });
    let mut latencies = Vec::new();
    let mut byte = [1u8];
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        let sent = Instant::now();
        near.write_all(&byte).unwrap();
        near.read_exact(&mut byte).unwrap();
        latencies.push(sent.elapsed());
    }
    drop(near);
    echo.join().unwrap();
    latencies.sort();
    latencies
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
    rate: f64,
    /// Sorted round trips, with one request in flight.
    latencies: Vec<Duration>,
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
        let mut run = drive(socket, load, clients, window, settings.seconds);
        if clients == 1 {
            run.latencies.sort();
        } else {
            run.latencies.clear();
        }
        Row {
            durability,
            method: match load {
                Load::Evaluate(_) => "decision.evaluate",
                Load::Noop => "edition.get",
            },
            clients,
            window,
            rate: run.rate(),
            latencies: run.latencies,
        }
    };
    // The floor under any round trip: the operating system's, measured before the daemons run.
    let floor = settings
        .only
        .is_none()
        .then(|| ping_pong(settings.seconds.min(3.0)));
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
            (evaluate, noop, ping_pong(settings.seconds.min(3.0)))
        })
    });

    println!();
    println!(
        "### Requests through the socket, {} s per row",
        settings.seconds
    );
    println!();
    println!("| request | durability | clients | in flight per client | replies/s |");
    println!("|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| `{}` | `{}` | {} | {} | {} |",
            row.method,
            row.durability,
            row.clients,
            row.window,
            thousands(row.rate)
        );
    }
    println!();
    println!("Round trip, one client, one request in flight:");
    println!();
    println!("| request | durability | requests | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    let print = |what: &str, durability: &str, sorted: &[Duration]| {
        println!(
            "| {what} | {durability} | {} | {} | {} | {} | {} |",
            thousands(sorted.len() as f64),
            us(percentile(sorted, 0.5)),
            us(percentile(sorted, 0.9)),
            us(percentile(sorted, 0.99)),
            us(*sorted.last().unwrap())
        );
    };
    for row in rows.iter().filter(|row| !row.latencies.is_empty()) {
        print(
            &format!("`{}`", row.method),
            &format!("`{}`", row.durability),
            &row.latencies,
        );
    }
    if let Some(sorted) = &floor {
        print(
            "1-byte ping-pong between two threads (no daemon)",
            "—",
            sorted,
        );
    }
    if let Some((evaluate, noop, floor)) = &one_cpu {
        println!();
        println!("The same, with the daemon and the client on one CPU (`sched_setaffinity`):");
        println!();
        println!("| request | durability | requests | p50 | p90 | p99 | max |");
        println!("|---|---|---|---|---|---|---|");
        print("`decision.evaluate`", "`none`", &evaluate.latencies);
        print("`edition.get`", "`none`", &noop.latencies);
        print(
            "1-byte ping-pong between two threads (no daemon)",
            "—",
            floor,
        );
    }
    println!();
    for (durability, entries) in &traces {
        println!(
            "After the `{durability}` run the daemon's trace holds {} entries and verifies.",
            thousands(*entries as f64)
        );
    }

    println!();
    println!("Goals:");
    println!();
    let met = |ok: bool| if ok { "met" } else { "not met" };
    let decisions = rows.iter().filter(|row| row.method == "decision.evaluate");
    for row in decisions.clone() {
        if row.durability == "fsync" && row.clients == 32 {
            println!(
                "- ≥ 50,000 durable decisions/s, 32 clients × {} in flight: {} ({}).",
                row.window,
                thousands(row.rate),
                met(row.rate >= 50_000.0)
            );
        }
    }
    for row in decisions {
        if row.durability == "none" && !row.latencies.is_empty() {
            let p50 = percentile(&row.latencies, 0.5);
            println!(
                "- p50 ≤ 25 µs with durability `none`, one client: {} ({}).",
                us(p50),
                met(p50 <= Duration::from_micros(25))
            );
        }
    }
    if let Some((evaluate, _, _)) = &one_cpu {
        let p50 = percentile(&evaluate.latencies, 0.5);
        println!(
            "- p50 ≤ 25 µs with durability `none`, one client, daemon and client on one CPU: {} ({}).",
            us(p50),
            met(p50 <= Duration::from_micros(25))
        );
    }
}
