//! What the benchmark binaries share: the release daemon in a work directory, closed-loop
//! socket clients, and a few statistics. Included by each binary with `#[path]`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The release `atlasbridged` (pro edition, warnings only) on a socket in `dir`.
pub(crate) struct Daemon {
    child: Child,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts `binary` in `dir` with `config` (TOML) and waits for its socket.
    pub(crate) fn start(binary: &Path, dir: &Path, config: &str) -> Self {
        Self::start_as(binary, dir, config, "pro", &[])
    }

    /// Like [`Daemon::start`], with an edition and extra environment variables.
    pub(crate) fn start_as(
        binary: &Path,
        dir: &Path,
        config: &str,
        edition: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let socket = dir.join("run/d.sock");
        let run = socket.parent().unwrap();
        std::fs::create_dir_all(run).unwrap();
        std::fs::set_permissions(run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let config_file = dir.join("config.toml");
        std::fs::write(&config_file, config).unwrap();
        let child = Command::new(binary)
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config_file)
            .arg("--edition")
            .arg(edition)
            .envs(env.iter().copied())
            // BENCH_DAEMON_LOG (e.g. `info`) shows the daemon's log while investigating a figure.
            .env(
                "ATLASBRIDGE_LOG",
                std::env::var("BENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
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

impl Daemon {
    /// The daemon's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:`).
    pub(crate) fn memory_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(field))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
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

/// What the clients send, and what a good reply looks like.
pub(crate) trait Load: Copy + Send + 'static {
    /// One request line. Built by hand: the clients share the cores with the daemon, and what
    /// they spend is not the daemon's throughput.
    fn request(self, client: usize, id: u64) -> Vec<u8>;
    /// Whether `line` is the reply expected.
    fn succeeded(self, line: &str) -> bool;
}

/// The outcome of [`drive`].
pub(crate) struct Run {
    pub replies: u64,
    pub elapsed: Duration,
    /// Every request's round trip, send to reply, sorted.
    pub latencies: Vec<Duration>,
}

impl Run {
    pub(crate) fn rate(&self) -> f64 {
        self.replies as f64 / self.elapsed.as_secs_f64()
    }

    /// The round trip at `p` (0–1).
    pub(crate) fn latency(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// The `id` of a reply line, found without parsing the whole reply: the clients share the cores
/// with the daemon, and what they spend is not the daemon's throughput.
fn reply_id(line: &str) -> Option<u64> {
    let start = line.find("\"id\":")? + 5;
    let digits = &line[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// `clients` connections, each keeping `window` requests of `load` in flight, for `seconds`.
/// Every reply must be the one expected; each request's round trip is timed, replies being
/// matched to requests by id (they may come back in any order).
pub(crate) fn drive(
    socket: &Path,
    load: impl Load,
    clients: usize,
    window: usize,
    seconds: f64,
) -> Run {
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
                let mut sent_at = std::collections::HashMap::with_capacity(window);
                let mut latencies = Vec::new();
                let mut next_id = 0u64;
                let mut line = String::new();
                loop {
                    while sent_at.len() < window && !stop.load(Ordering::Relaxed) {
                        writer.write_all(&load.request(client, next_id)).unwrap();
                        sent_at.insert(next_id, Instant::now());
                        next_id += 1;
                    }
                    if sent_at.is_empty() {
                        break;
                    }
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    assert!(load.succeeded(&line), "request failed: {line}");
                    let id = reply_id(&line).unwrap_or_else(|| panic!("no id in {line}"));
                    let sent = sent_at
                        .remove(&id)
                        .unwrap_or_else(|| panic!("reply to no request: {line}"));
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.append(&mut handle.join().unwrap());
    }
    latencies.sort_unstable();
    Run {
        replies: latencies.len() as u64,
        elapsed: started.elapsed(),
        latencies,
    }
}

/// Round trips of one byte over a Unix socket pair between two threads, sorted: the socket echo
/// that every figure through the daemon's socket is compared with, i.e. what the operating
/// system (here, a VM) charges for waking a thread and being woken, twice.
pub(crate) fn socket_echo(seconds: f64) -> Vec<Duration> {
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
    latencies.sort_unstable();
    latencies
}

/// Appends a goal of an issue and how this run measured against it to the file named by
/// `BENCH_GOALS` (`scripts/bench.sh` gathers them into the report's summary).
pub(crate) fn record_goal(goal: &str, measured: &str, met: bool) {
    record_verdict(goal, measured, if met { "met" } else { "not met" });
}

/// Like [`record_goal`], for a comparison whose verdict is not a threshold.
pub(crate) fn record_verdict(goal: &str, measured: &str, verdict: &str) {
    let Some(path) = std::env::var_os("BENCH_GOALS") else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(file, "| {goal} | {measured} | {verdict} |").unwrap();
}

/// `d` in the unit that suits it: `850 ns`, `58.7 µs`, `1.23 ms`, `2.50 s`.
pub(crate) fn duration(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    match ns {
        n if n < 1e3 => format!("{n:.0} ns"),
        n if n < 1e4 => format!("{:.2} µs", n / 1e3),
        n if n < 1e6 => format!("{:.1} µs", n / 1e3),
        n if n < 1e9 => format!("{:.2} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

/// The value at `p` (0–1) of sorted samples.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The best of three timed runs, after one run that warms the caches.
pub(crate) fn best_of_three(mut run: impl FnMut()) -> Duration {
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

/// Runs `work` with this thread, and so every thread and process it starts, on CPU `cpu` only.
pub(crate) fn on_cpu<T>(cpu: usize, work: impl FnOnce() -> T) -> T {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    let all = sched_getaffinity(None).unwrap();
    let mut one = CpuSet::new();
    one.set(cpu);
    sched_setaffinity(None, &one).unwrap();
    let result = work();
    sched_setaffinity(None, &all).unwrap();
    result
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The workspace's root (the benchmark binaries live in its `tests` crate).
pub(crate) fn workspace() -> PathBuf {
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    tests
        .parent()
        .map_or_else(|| tests.clone(), Path::to_path_buf)
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
