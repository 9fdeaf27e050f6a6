//! Percentiles, the report's number formats, and the goal rows `scripts/bench.sh` gathers.

use std::io::Write as _;
use std::time::Duration;

/// The value at `p` (0–1) of sorted samples (nearest rank).
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// `d` in milliseconds with two decimals: `0.84 ms`, `12.31 ms`.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `12345.6` → `12,346`.
pub(crate) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Appends a row to the report's goals (the file named by `BENCH_GOALS`, when set).
pub(crate) fn record_verdict(goal: &str, measured: &str, verdict: &str) {
    let Some(path) = std::env::var_os("BENCH_GOALS") else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open BENCH_GOALS");
    writeln!(file, "| {goal} | {measured} | {verdict} |").expect("write BENCH_GOALS");
}

/// CPU time (user + system) of processes, read from `/proc/<pid>/stat`, to say where an
/// interval's cycles went.
pub(crate) fn cpu_time(pids: &[u32]) -> Duration {
    // USER_HZ is 100 on every Linux the benchmark runs on.
    const TICKS_PER_SECOND: f64 = 100.0;
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // The command name may hold spaces: fields are counted after its closing parenthesis.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND)
}

/// The processes of the PostgreSQL cluster whose postmaster is `postmaster`: itself and its
/// children (backends, writers), so that its CPU time can be told apart from other clusters'.
pub(crate) fn cluster_processes(postmaster: u32) -> Vec<u32> {
    let mut pids = vec![postmaster];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let rest = stat[stat.rfind(')')? + 2..].to_owned();
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if parent == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}
