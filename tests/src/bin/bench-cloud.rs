//! Benchmarks of the cloud uplink against the test peer on 127.0.0.1: the "Cloud uplink"
//! section of `docs/benchmarks.md` on stdout, progress on stderr (`scripts/bench.sh` runs it
//! with the others and assembles the report).
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p atlasbridge-e2e --bin bench-cloud -- [--daemon PATH] [--seconds S]
//!     [--entries N] [--rounds R] [--skip-backlog]
//! ```
//!
//! - local decision latency (one client, one request in flight, `durability = "fsync"`) with
//!   the cloud off, with the uplink streaming to a healthy peer, and with the peer killed; `R`
//!   rounds (3) of the three, first with every thread free to run on every CPU, then with the
//!   peer alone on CPU 1 and the daemon and its client on CPU 0;
//! - a backlog of `--entries` (1,000,000) trace entries made while the peer is away: the daemon's
//!   RSS while that far behind, then the time the uplink takes to deliver it once the peer is
//!   back (entries/s), and the daemon's peak RSS meanwhile.
//!
//! The peer runs in this process; it parses and stores every entry, so it is part of what the
//! streaming figures measure. `BENCH_DAEMON_LOG=info` shows the daemon's log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../bench_support.rs"]
mod bench_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atlasbridge_e2e::cloud_peer::{CloudPeer, PeerConfig};
use atlasbridge_protocol::cloud::messages::Stream;
use bench_support::{Daemon, drive, percentile, record_verdict, thousands, workspace};

struct Settings {
    daemon: PathBuf,
    seconds: f64,
    entries: u64,
    rounds: usize,
    backlog: bool,
}

fn settings() -> Settings {
    let mut settings = Settings {
        daemon: workspace().join("target/release/atlasbridged"),
        seconds: 5.0,
        entries: 1_000_000,
        rounds: 3,
        backlog: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--daemon" => settings.daemon = PathBuf::from(args.next().unwrap()),
            "--seconds" => settings.seconds = args.next().unwrap().parse().unwrap(),
            "--entries" => settings.entries = args.next().unwrap().parse().unwrap(),
            "--rounds" => settings.rounds = args.next().unwrap().parse().unwrap(),
            "--skip-backlog" => settings.backlog = false,
            other => panic!("unknown argument {other}; see the source for usage"),
        }
    }
    settings
}

const POLICY: &str = r#"policy_version: "1"
name: bench-cloud
autonomy_mode: full
rules:
  - id: yes
    match: {prompt_type: [yes_no], min_confidence: high}
    action: {type: auto_reply, value: "y"}
"#;

/// `decision.evaluate` with prompt ids unique per run.
#[derive(Debug, Clone, Copy)]
struct Evaluate(usize);

impl bench_support::Load for Evaluate {
    fn request(self, client: usize, id: u64) -> Vec<u8> {
        format!(
            concat!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"decision.evaluate","params":{{"#,
                r#""session_id":"bench-{client}","prompt_id":"p-{run}-{client}-{id}","#,
                r#""prompt_type":"yes_no","prompt_text":"Continue? [y/n]","confidence":"high"}}}}"#,
                "\n"
            ),
            id = id,
            client = client,
            run = self.0,
        )
        .into_bytes()
    }

    fn succeeded(self, line: &str) -> bool {
        line.contains(r#""action":"auto_reply""#)
    }
}

fn config(policy: &Path, durability: &str, peer: Option<&CloudPeer>) -> String {
    let mut config = format!(
        "[daemon]\nmax_connections = 256\n\n[policy]\nfile = {:?}\n\n[trace]\ndurability = \"{durability}\"\n",
        policy.to_str().unwrap()
    );
    if let Some(peer) = peer {
        config.push_str(&format!(
            "\n[cloud]\nenabled = true\nendpoint = \"{}\"\norg_id = \"{}\"\nserver_public_key = \"{}\"\n",
            peer.ws_url(),
            peer.org_id(),
            peer.server_public_key()
        ));
    }
    config
}

fn start(dir: &Path, settings: &Settings, config: &str, peer: Option<&CloudPeer>) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let key = peer.map(CloudPeer::api_key).unwrap_or_default();
    Daemon::start_as(
        &settings.daemon,
        dir,
        config,
        "enterprise",
        &[("ATLASBRIDGE_CLOUD_API_KEY", key.as_str())],
    )
}

fn us(d: Duration) -> String {
    format!("{} µs", thousands(d.as_secs_f64() * 1e6))
}

fn main() {
    let settings = settings();
    let work = tempfile::Builder::new()
        .prefix("bench-cloud-")
        .tempdir_in(workspace().join("target"))
        .unwrap();
    let policy = work.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    eprintln!("bench-cloud: work directory {}", work.path().display());
    println!("## Cloud uplink");
    println!();
    println!(
        "Binary: `bench-cloud --seconds {} --rounds {} --entries {}`. The test peer \
         (`tests/src/cloud_peer`) runs in the benchmark's process on 127.0.0.1 at nice 19: it \
         stands in for a cloud on another machine, but unless placed on its own CPU it shares \
         the machine's cores, and it parses, verifies and stores every entry, so it is part of \
         what the streaming figures measure.",
        settings.seconds, settings.rounds, settings.entries
    );
    latency(&settings, work.path(), &policy);
    if settings.backlog {
        backlog(&settings, work.path(), &policy);
    }
}

/// Where the benchmark's threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Daemon, client and peer share every CPU of the machine.
    Shared,
    /// Daemon and client on CPU 0, the peer alone on CPU 1: the peer's work no longer competes
    /// with the daemon's, as for a cloud on another machine; the uplink's still does.
    Split,
}

/// One row's figures.
struct Row {
    decisions: usize,
    rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// The three rows of one round, and the CPU shares measured over its healthy row.
struct Round {
    off: Row,
    healthy: Row,
    killed: Row,
    delivered: usize,
    daemon_cpu: f64,
    uplink_cpu: f64,
    peer_cpu: f64,
}

fn latency(settings: &Settings, work: &Path, policy: &Path) {
    let mut placements = vec![Placement::Shared];
    if bench_support::cores() >= 2 {
        placements.push(Placement::Split);
    }
    let measured: Vec<(Placement, Vec<Round>)> = placements
        .into_iter()
        .map(|placement| {
            let rounds = (1..=settings.rounds)
                .map(|round| {
                    eprintln!("bench-cloud: latency, {placement:?}, round {round}");
                    let dir = work.join(format!("{placement:?}-{round}"));
                    match placement {
                        Placement::Shared => latency_round(settings, &dir, policy, None),
                        Placement::Split => bench_support::on_cpu(0, || {
                            latency_round(settings, &dir, policy, Some(1))
                        }),
                    }
                })
                .collect();
            (placement, rounds)
        })
        .collect();

    println!();
    println!("### Local decisions while streaming");
    println!();
    println!(
        "One client, one request in flight, `durability = \"fsync\"` (the default), {} s per row: \
         a daemon without `[cloud]` (off); then one linked to the peer, streaming each decision \
         as it is made (healthy); then the same daemon after the peer was killed, its uplink \
         reconnecting with backoff (killed). {} rounds of the three rows, fresh daemons each \
         round, in two placements: every thread free to run on every CPU (shared), and the peer \
         alone on CPU 1 with the daemon and its client on CPU 0 (split, `sched_setaffinity`), \
         which takes the peer's work off the daemon's CPU as a cloud on another machine would.",
        settings.seconds, settings.rounds
    );
    println!();
    println!(
        "| placement | row | median p99 | × off | p99 per round | p50 per round | decisions/s per round |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (placement, rounds) in &measured {
        summarize(*placement, rounds);
    }
    println!();
    println!("<details><summary>Every round</summary>");
    println!();
    println!("| placement | round | row | decisions | decisions/s | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|---|");
    for (placement, rounds) in &measured {
        for (index, round) in rounds.iter().enumerate() {
            for (label, row) in [
                ("off", &round.off),
                ("healthy", &round.healthy),
                ("killed", &round.killed),
            ] {
                println!(
                    "| {} | {} | {label} | {} | {} | {} | {} | {} |",
                    placement.name(),
                    index + 1,
                    thousands(row.decisions as f64),
                    thousands(row.rate),
                    us(row.p50),
                    us(row.p99),
                    us(row.max)
                );
            }
        }
    }
    println!();
    println!("</details>");
    println!();
    for (placement, rounds) in &measured {
        let mean =
            |pick: fn(&Round) -> f64| rounds.iter().map(pick).sum::<f64>() / rounds.len() as f64;
        println!(
            "- {}, over the healthy rows (mean): {} entries reached the peer per row; the daemon \
             used {:.0}% of one core, its uplink threads {:.1}%, the peer's threads {:.1}% (CPU \
             time from `/proc/<pid>/task/*/stat`).",
            placement.name(),
            thousands(mean(|round| round.delivered as f64)),
            mean(|round| round.daemon_cpu),
            mean(|round| round.uplink_cpu),
            mean(|round| round.peer_cpu),
        );
    }
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Split => "split",
        }
    }
}

/// The median over the rounds of a row's p99.
fn median_p99(rounds: &[Round], pick: fn(&Round) -> &Row) -> Duration {
    let mut p99s: Vec<Duration> = rounds.iter().map(|round| pick(round).p99).collect();
    p99s.sort();
    p99s[p99s.len() / 2]
}

/// The summary rows of one placement, and its verdict on the issue's comparison: the p99 with
/// the peer healthy against killed, judged against the spread of the `off` row's own p99 from
/// round to round (the noise of this machine).
fn summarize(placement: Placement, rounds: &[Round]) {
    let range = |values: Vec<f64>, show: fn(f64) -> String| {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(0.0, f64::max);
        format!("{}–{}", show(min), show(max))
    };
    let micros = |s: f64| us(Duration::from_secs_f64(s));
    let off = median_p99(rounds, |round| &round.off);
    for (label, pick) in [
        (
            "off (no `[cloud]`)",
            (|round| &round.off) as fn(&Round) -> &Row,
        ),
        ("on, peer healthy", |round| &round.healthy),
        ("on, peer killed", |round| &round.killed),
    ] {
        let median = median_p99(rounds, pick);
        println!(
            "| {} | {label} | {} | {:.2} | {} | {} | {} |",
            placement.name(),
            us(median),
            median.as_secs_f64() / off.as_secs_f64(),
            range(
                rounds.iter().map(|r| pick(r).p99.as_secs_f64()).collect(),
                micros
            ),
            range(
                rounds.iter().map(|r| pick(r).p50.as_secs_f64()).collect(),
                micros
            ),
            range(rounds.iter().map(|r| pick(r).rate).collect(), thousands),
        );
    }
    let healthy = median_p99(rounds, |round| &round.healthy);
    let killed = median_p99(rounds, |round| &round.killed);
    let ratio = healthy.as_secs_f64() / killed.as_secs_f64();
    let off_p99s: Vec<f64> = rounds.iter().map(|r| r.off.p99.as_secs_f64()).collect();
    let noise = off_p99s.iter().copied().fold(0.0, f64::max)
        / off_p99s.iter().copied().fold(f64::INFINITY, f64::min);
    record_verdict(
        &format!(
            "local decisions' p99 unaffected by streaming: peer healthy against killed ({} placement)",
            placement.name()
        ),
        &format!(
            "×{ratio:.2} of the medians ({} against {}); the `off` row alone spans ×{noise:.2} \
             from round to round",
            us(healthy),
            us(killed)
        ),
        if rounds.len() < 2 {
            "no verdict: one round measures no spread"
        } else if ratio <= noise {
            "within the noise"
        } else {
            "above the noise"
        },
    );
}

/// Off, healthy and killed rows with fresh daemons in `dir`; the peer's threads on `peer_cpu`.
fn latency_round(settings: &Settings, dir: &Path, policy: &Path, peer_cpu: Option<usize>) -> Round {
    let row = |daemon: &Daemon, run: usize| {
        let mut result = drive(&daemon.socket, Evaluate(run), 1, 1, settings.seconds);
        result.latencies.sort();
        let sorted = &result.latencies;
        Row {
            decisions: sorted.len(),
            rate: result.rate(),
            p50: percentile(sorted, 0.5),
            p99: percentile(sorted, 0.99),
            max: *sorted.last().unwrap(),
        }
    };
    let off = {
        let daemon = start(
            &dir.join("off"),
            settings,
            &config(policy, "fsync", None),
            None,
        );
        drive(&daemon.socket, Evaluate(0), 1, 1, 0.5);
        row(&daemon, 1)
    };
    let peer = CloudPeer::start_with(PeerConfig {
        nice: Some(19),
        cpu: peer_cpu,
        ..PeerConfig::default()
    });
    let daemon = start(
        &dir.join("linked"),
        settings,
        &config(policy, "fsync", Some(&peer)),
        Some(&peer),
    );
    drive(&daemon.socket, Evaluate(0), 1, 1, 0.5);
    assert!(peer.wait_until(|s| s.is_connected(), Duration::from_secs(20)));
    let (uplink_before, all_before) = cpu_ticks(daemon.pid());
    let peer_before = thread_ticks(std::process::id(), "(cloud-peer");
    let timed = Instant::now();
    let healthy = row(&daemon, 1);
    let (uplink_after, all_after) = cpu_ticks(daemon.pid());
    let peer_after = thread_ticks(std::process::id(), "(cloud-peer");
    let seconds = timed.elapsed().as_secs_f64();
    let delivered = peer.entry_count(Stream::Trace);
    peer.stop();
    let killed = row(&daemon, 2);
    Round {
        off,
        healthy,
        killed,
        delivered,
        daemon_cpu: ticks_percent(all_after - all_before, seconds),
        uplink_cpu: ticks_percent(uplink_after - uplink_before, seconds),
        peer_cpu: ticks_percent(peer_after - peer_before, seconds),
    }
}

/// The peer, on the lowest CPU priority: it stands in for a cloud on another machine, whose work
/// would not compete with this one's.
fn remote_peer() -> CloudPeer {
    CloudPeer::start_with(PeerConfig {
        nice: Some(19),
        ..PeerConfig::default()
    })
}

fn backlog(settings: &Settings, work: &Path, policy: &Path) {
    let peer = remote_peer();
    let daemon = start(
        &work.join("backlog"),
        settings,
        &config(policy, "none", Some(&peer)),
        Some(&peer),
    );
    drive(&daemon.socket, Evaluate(0), 1, 1, 0.2);
    assert!(peer.wait_until(|s| s.is_connected(), Duration::from_secs(20)));
    // Caught up and acknowledged, so that the backlog is exactly what is made while away.
    let made = usize::try_from(trace_entries(&daemon)).unwrap();
    assert!(peer.wait_for_entries(Stream::Trace, made, Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(500));
    let rss_linked = daemon.memory_kib("VmRSS:");
    peer.stop();
    let started = Instant::now();
    let mut run = 1;
    loop {
        let head = trace_entries(&daemon);
        if head >= settings.entries {
            break;
        }
        let rate = drive(&daemon.socket, Evaluate(run), 32, 16, 2.0).rate();
        run += 1;
        eprintln!("filling: {head} entries ({rate:.0}/s)");
    }
    let filled = started.elapsed();
    let total = trace_entries(&daemon);
    // Let the allocator settle after the burst of requests.
    std::thread::sleep(Duration::from_secs(1));
    let rss_behind = daemon.memory_kib("VmRSS:");
    let peak_before = daemon.memory_kib("VmHWM:");
    let catch_up = Instant::now();
    let held_before = peer.entry_count(Stream::Trace);
    let batches_before = peer.received("audit_batch").len();
    peer.restart();
    let timeout = Duration::from_secs(3600);
    assert!(
        peer.wait_for_entries(Stream::Trace, usize::try_from(total).unwrap(), timeout),
        "the peer did not catch up"
    );
    let took = catch_up.elapsed();
    // The daemon was backing off while the peer was away: the transfer starts at its next
    // attempt, which the peer recorded.
    let connected = peer
        .upgrade_attempts()
        .into_iter()
        .rfind(|at| *at >= catch_up)
        .unwrap_or(catch_up);
    let reconnect = connected - catch_up;
    let transfer = took - reconnect;
    if std::env::var("BENCH_DEBUG").is_ok() {
        let batches = peer.received("audit_batch");
        eprintln!("peer held {held_before} before the restart; first batches after:");
        for b in batches
            .iter()
            .skip(batches_before)
            .filter(|b| b["stream"] == "trace")
            .take(5)
        {
            eprintln!("  {} ..= {}", b["from_seq"], b["to_seq"]);
        }
    }
    let rss_after = daemon.memory_kib("VmRSS:");
    let peak_after = daemon.memory_kib("VmHWM:");
    assert_eq!(peer.entry_count(Stream::Trace) as u64, total);
    assert!(peer.gaps().is_empty());

    println!();
    println!("### A backlog of {} entries", thousands(total as f64));
    println!();
    println!(
        "The daemon caught up with the peer, the peer was stopped, and {} trace entries were made \
         (32 clients × 16 in flight, `durability = \"none\"`, {:.1} s); then the peer came back.",
        thousands(total as f64),
        filled.as_secs_f64()
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| daemon RSS, linked and caught up, before the backlog | {} KiB |",
        thousands(rss_linked as f64)
    );
    println!(
        "| daemon RSS with {} entries behind | {} KiB |",
        thousands(total as f64),
        thousands(rss_behind as f64)
    );
    println!(
        "| daemon peak RSS before the catch-up (filling included) | {} KiB |",
        thousands(peak_before as f64)
    );
    println!(
        "| peer back → the daemon's next attempt (its reconnect backoff) | {:.1} s |",
        reconnect.as_secs_f64()
    );
    println!(
        "| that attempt → the peer holds every entry (catch-up) | {:.1} s |",
        transfer.as_secs_f64()
    );
    println!(
        "| stream throughput during the catch-up | {} entries/s |",
        thousands(total as f64 / transfer.as_secs_f64())
    );
    println!(
        "| daemon RSS after the catch-up | {} KiB |",
        thousands(rss_after as f64)
    );
    println!(
        "| daemon peak RSS, catch-up included | {} KiB |",
        thousands(peak_after as f64)
    );
    println!(
        "| resent entries the peer ignored | {} |",
        thousands(peer.duplicates(Stream::Trace) as f64)
    );
    println!(
        "| connections the peer accepted, in all | {} |",
        peer.connections()
    );
    drop(daemon);
    drop(peer);
    let rss_without = rss_without_cloud(settings, work, policy, total);
    println!(
        "| for comparison: RSS of a daemon without `[cloud]` after as many decisions | {} KiB |",
        thousands(rss_without as f64)
    );
    println!();
    println!(
        "The trace files are the uplink's buffer: what the daemon holds while behind is compared \
         with a daemon that made as many decisions without `[cloud]` (the idempotency memory \
         keeps the last 100,000 answers). The time before the catch-up is the uplink's reconnect \
         backoff (1 s doubling to 60 s while the peer was away), not the transfer."
    );
    record_verdict(
        &format!(
            "stream throughput and catch-up of a {}-entry backlog",
            thousands(total as f64)
        ),
        &format!(
            "{} entries/s, {:.1} s (after {:.1} s of reconnect backoff)",
            thousands(total as f64 / transfer.as_secs_f64()),
            transfer.as_secs_f64(),
            reconnect.as_secs_f64()
        ),
        "—",
    );
    record_verdict(
        &format!(
            "daemon RSS while {} entries behind",
            thousands(total as f64)
        ),
        &format!(
            "{} KiB; {} KiB without `[cloud]` after as many decisions (×{:.2}); peak with the \
             catch-up {} KiB",
            thousands(rss_behind as f64),
            thousands(rss_without as f64),
            rss_behind as f64 / rss_without as f64,
            thousands(peak_after as f64)
        ),
        if rss_behind as f64 <= rss_without as f64 * 1.25 {
            "bounded (within ×1.25 of no cloud)"
        } else {
            "above ×1.25 of no cloud"
        },
    );
}

/// The RSS of a daemon without the uplink after `entries` decisions made the same way: what the
/// decisions themselves keep (the idempotency memory holds the last 100,000 answers).
fn rss_without_cloud(settings: &Settings, work: &Path, policy: &Path, entries: u64) -> u64 {
    let daemon = start(
        &work.join("no-cloud"),
        settings,
        &config(policy, "none", None),
        None,
    );
    let mut run = 1;
    while trace_entries(&daemon) < entries {
        drive(&daemon.socket, Evaluate(run), 32, 16, 2.0);
        run += 1;
    }
    std::thread::sleep(Duration::from_secs(1));
    daemon.memory_kib("VmRSS:")
}

/// CPU time (clock ticks) of the threads of `pid` whose `stat` name starts with `prefix`.
fn thread_ticks(pid: u32, prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            // `pid (comm) state ...`: after the closing parenthesis, utime and stime are the
            // 12th and 13th fields.
            let (head, rest) = stat.rsplit_once(") ")?;
            if !head.contains(prefix) {
                return None;
            }
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// CPU time (utime + stime, in clock ticks) of the daemon's `cloud-uplink` threads and of all
/// its threads.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    (thread_ticks(pid, "(cloud-uplink"), thread_ticks(pid, "("))
}

/// Clock ticks (100 per second on Linux) over `seconds`, as a percentage of one core.
fn ticks_percent(ticks: u64, seconds: f64) -> f64 {
    ticks as f64 / 100.0 / seconds * 100.0
}

fn trace_entries(daemon: &Daemon) -> u64 {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"trace.head\"}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
    reply["result"]["entries"].as_u64().unwrap()
}
