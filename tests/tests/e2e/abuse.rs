//! Load and abuse: hundreds of well-behaved clients decide while hostile ones send garbage, half
//! lines, over-long and near-limit lines, stop reading, subscribe and never read, drop at random
//! and crowd past the connection limit. Every good decision must be answered and stored exactly
//! once, the chain must verify, the daemon must keep answering, and its memory must stay bounded.
//!
//! Loopback only: one daemon on a Unix socket in a temporary directory. Counts are modest so that
//! the file runs in well under a minute on two busy cores; `ATLASBRIDGE_ABUSE_SCALE=N` multiplies
//! them (clients, decisions and hostile rounds) for a longer run. Random choices come from a
//! fixed seed, so every run makes the same ones.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atlasbridge_protocol::framing::MAX_LINE_BYTES;
use serde_json::{Value, json};

use crate::support::{Conn, DEADLINE, Options, TestDaemon, eventually, with_policy};

/// Well-behaved clients at scale 1.
const GOOD_CLIENTS: usize = 500;

/// Decisions each of them makes (half `decision.evaluate`, half `decision.record`).
const DECISIONS_PER_CLIENT: usize = 10;

/// Connection slots above the good clients: the hostile clients that hold a connection (a dozen)
/// fit, and the burst fills the rest and then goes beyond.
const HEADROOM: usize = 64;

/// Connections the burst opens beyond the headroom; each of them must be refused.
const BURST_EXTRA: usize = 100;

/// The daemon's peak resident memory must stay below `BASE + PER_CONNECTION × max_connections`.
/// Measured on a debug build: about 22 MiB idle, and about 50 KiB for each open connection (its
/// tasks, an 8 KiB read buffer, a reply batch); a connection in the middle of a near-limit line
/// holds about 3 MiB more for a moment (the 1 MiB line buffer, its parsed form, its reply), and
/// the subscribers share one buffer. That is 68 MiB at scale 1 (564 slots) and 262 MiB at scale 10
/// (5,064 slots), against bounds of 163 MiB and 444 MiB. A daemon that buffered what its
/// clients do not read would cross it: each of the four clients that never read sends requests
/// until it is dropped (up to 64 MiB of them), and their replies are 25 times larger.
const MEMORY_BASE_KIB: u64 = 128 * 1024;
const MEMORY_PER_CONNECTION_KIB: u64 = 64;

const POLICY: &str = r#"policy_version: "1"
name: e2e-abuse
autonomy_mode: full
rules:
  - id: yes
    match:
      prompt_type: [yes_no]
      min_confidence: high
    action:
      type: auto_reply
      value: "y"
defaults:
  no_match: require_human
  low_confidence: deny
"#;

/// `ATLASBRIDGE_ABUSE_SCALE` (default 1): the multiplier of every count.
fn scale() -> usize {
    match std::env::var("ATLASBRIDGE_ABUSE_SCALE") {
        Err(_) => 1,
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => panic!("ATLASBRIDGE_ABUSE_SCALE must be a whole number ≥ 1, not {text:?}"),
        },
    }
}

/// xorshift64*: small, fast and the same on every machine.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:`).
fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Samples the daemon's VmRSS every few milliseconds until stopped.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(u64, usize)>,
}

impl MemorySampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let (mut peak, mut samples) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                if let Some(rss) = memory_kib(pid, "VmRSS:") {
                    peak = peak.max(rss);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (peak, samples)
        });
        Self { stop, handle }
    }

    /// The highest VmRSS sampled, and the number of samples.
    fn finish(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// A thread with a small stack: hundreds of clients run at once.
fn spawn<T: Send + 'static>(
    name: String,
    work: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(256 * 1024)
        .spawn(work)
        .expect("spawn a client thread")
}

fn request(id: u64, method: &str, params: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(
        &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
    )
    .unwrap();
    line.push(b'\n');
    line
}

/// Whether `reply` is the daemon refusing the connection because every slot is taken.
fn is_refusal(reply: &Value) -> bool {
    reply["id"].is_null() && reply["error"]["code"] == -32005
}

/// Writes and ignores the outcome: the daemon may have refused or dropped this client already.
fn write_quietly(stream: &UnixStream, bytes: &[u8]) {
    let _ = (&*stream).write_all(bytes);
}

/// Everything the daemon sends until it closes the connection, raw: a client dropped for not
/// reading may get its last line cut short. A read that times out fails the test.
fn read_raw_to_end(stream: &UnixStream) -> Vec<u8> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        match (&*stream).read(&mut chunk) {
            Ok(0) => return bytes,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return bytes,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "the daemon neither ended nor closed the connection ({e}) after {} bytes",
                bytes.len()
            ),
        }
    }
}

/// What one kind of hostile client achieved: rounds the daemon served as the protocol says, and
/// rounds it refused with -32005 because the burst held every slot at that moment.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    served: u64,
    refused: u64,
}

/// Connects until the daemon admits the connection, as a client retrying -32005 later would.
/// `probe` sends something on a fresh connection and returns the first reply; the connection
/// and that reply are returned once it is not a refusal.
fn admitted(
    socket: &Path,
    tally: &mut Tally,
    mut probe: impl FnMut(&mut Conn) -> Value,
) -> (Conn, Value) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut conn = Conn::open(socket).expect("connect");
        let reply = probe(&mut conn);
        if !is_refusal(&reply) {
            return (conn, reply);
        }
        tally.refused += 1;
        assert!(Instant::now() < deadline, "refused until the deadline");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A well-behaved client: `hello`, wait for the hostile clients to start, then its decisions one
/// at a time. Returns each prompt id with the seq of its trace entry, and the connection, which
/// keeps its slot until the burst is over.
fn good_client(socket: &Path, client: usize, start: &Barrier) -> (Vec<(String, u64)>, Conn) {
    let mut conn = Conn::open(socket).expect("a good client connects");
    let hello = conn.ok(
        "hello",
        json!({"protocol": 1, "client": format!("good-{client}")}),
    );
    assert_eq!(hello["protocol"], 1);
    // Everyone is connected; then every hostile client has started.
    start.wait();
    start.wait();
    let answers = (0..DECISIONS_PER_CLIENT)
        .map(|n| {
            let prompt = format!("good-{client}-p{n}");
            let session = format!("good-{client}");
            let answer = if (client + n).is_multiple_of(2) {
                let answer = conn.ok(
                    "decision.evaluate",
                    json!({
                        "session_id": session,
                        "prompt_id": prompt,
                        "prompt_type": "yes_no",
                        "prompt_text": "Continue? [y/n]",
                        "confidence": "high",
                    }),
                );
                assert_eq!(answer["action"], "auto_reply", "{answer}");
                answer
            } else {
                conn.ok(
                    "decision.record",
                    json!({
                        "session_id": session,
                        "prompt_id": prompt,
                        "prompt_type": "yes_no",
                        "action_taken": "auto_reply",
                    }),
                )
            };
            let seq = answer["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("{prompt}: no seq in {answer}"));
            (prompt, seq)
        })
        .collect();
    (answers, conn)
}

/// A line of random bytes without a newline inside, and not blank (blank lines get no reply).
fn garbage_line(rng: &mut Rng) -> Vec<u8> {
    let len = 1 + rng.below(4096);
    let mut line: Vec<u8> = (0..len)
        .map(|_| match rng.next() as u8 {
            b'\n' => b'?',
            byte => byte,
        })
        .collect();
    if matches!(line[0], b' ' | b'\t' | b'\r') {
        line[0] = b'#';
    }
    line.push(b'\n');
    line
}

#[track_caller]
fn assert_garbage_answer(reply: &Value) {
    assert!(
        matches!(reply["error"]["code"].as_i64(), Some(-32700 | -32600)),
        "garbage answered with {reply}"
    );
}

/// Garbage lines, each answered with a parse or request error, then a real request on the same
/// connection; sometimes a last half line before the drop.
fn garbage_client(socket: &Path, seed: u64, rounds: usize) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    for _ in 0..rounds {
        let first = garbage_line(&mut rng);
        let (mut conn, reply) = admitted(socket, &mut tally, |conn| {
            write_quietly(conn.stream(), &first);
            conn.read()
        });
        assert_garbage_answer(&reply);
        for _ in 0..rng.below(3) {
            conn.send_raw(&garbage_line(&mut rng));
            assert_garbage_answer(&conn.read());
        }
        conn.ok("daemon.status", json!({}));
        if rng.below(2) == 0 {
            let half = garbage_line(&mut rng);
            conn.send_raw(&half[..half.len() / 2]);
        }
        tally.served += 1;
    }
    tally
}

/// Lines of exactly 1 MiB + 1 byte: -32006 with a null id, then the daemon closes.
fn too_long_client(socket: &Path, rounds: usize) -> Tally {
    let mut tally = Tally::default();
    let head = br#"{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":{"x":""#;
    let tail = br#""}}"#;
    let mut line = head.to_vec();
    line.resize(MAX_LINE_BYTES + 1 - tail.len(), b'a');
    line.extend_from_slice(tail);
    assert_eq!(line.len(), MAX_LINE_BYTES + 1);
    line.push(b'\n');
    for _ in 0..rounds {
        let (mut conn, reply) = admitted(socket, &mut tally, |conn| {
            // The daemon stops reading at the limit and closes; the rest of the write may fail.
            write_quietly(conn.stream(), &line);
            conn.read()
        });
        assert_eq!(reply["error"]["code"], -32006, "{reply}");
        assert_eq!(reply["id"], Value::Null);
        assert_eq!(conn.try_read(), None, "closed after -32006");
        tally.served += 1;
    }
    tally
}

/// Near-limit lines of valid or almost valid JSON, each a little under 1 MiB, with the error
/// codes each may get (none: a result): a `hello` with a huge client name, an unknown method
/// with a huge string, a huge member where none is allowed, a prompt text far over its limit
/// (refused, so nothing reaches the trace), and arrays nested half a million deep (a parse
/// error at the parser's depth limit, not a stack overflow).
fn near_limit_lines(rng: &mut Rng) -> Vec<(Vec<u8>, &'static [i64])> {
    let mut sized = |head: &[u8], fill: u8, tail: &[u8]| {
        let len = MAX_LINE_BYTES - rng.below(64);
        let mut line = head.to_vec();
        line.resize(len - tail.len(), fill);
        line.extend_from_slice(tail);
        line.push(b'\n');
        line
    };
    vec![
        (
            sized(
                br#"{"jsonrpc":"2.0","id":7,"method":"hello","params":{"protocol":1,"client":""#,
                b'c',
                br#""}}"#,
            ),
            &[],
        ),
        (
            sized(
                br#"{"jsonrpc":"2.0","id":7,"method":"no.such.method","params":{"x":""#,
                b'z',
                br#""}}"#,
            ),
            &[-32601],
        ),
        (
            sized(
                br#"{"jsonrpc":"2.0","id":7,"method":"daemon.status","params":{"verbose":""#,
                b'v',
                br#""}}"#,
            ),
            &[-32602],
        ),
        (
            sized(
                br#"{"jsonrpc":"2.0","id":7,"method":"decision.evaluate","params":{"session_id":"hostile","prompt_id":"huge","prompt_type":"yes_no","confidence":"high","prompt_text":""#,
                b'y',
                br#""}}"#,
            ),
            &[-32602],
        ),
        (
            nested(MAX_LINE_BYTES - rng.below(64)),
            &[-32700],
        ),
    ]
}

/// `daemon.status` with params of arrays nested as deep as a line of `len` bytes allows.
fn nested(len: usize) -> Vec<u8> {
    let head = br#"{"jsonrpc":"2.0","id":7,"method":"daemon.status","params":"#;
    let depth = (len - head.len() - 1) / 2;
    let mut line = head.to_vec();
    line.resize(head.len() + depth, b'[');
    line.resize(head.len() + 2 * depth, b']');
    line.extend_from_slice(b"}\n");
    line
}

fn near_limit_client(socket: &Path, seed: u64, rounds: usize) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let lines = near_limit_lines(&mut rng);
    for _ in 0..rounds {
        for (line, errors) in &lines {
            let (mut conn, reply) = admitted(socket, &mut tally, |conn| {
                write_quietly(conn.stream(), line);
                conn.read()
            });
            match reply["error"]["code"].as_i64() {
                None => assert_eq!(reply["id"], 7, "{reply}"),
                Some(code) => assert!(errors.contains(&code), "{reply}"),
            }
            conn.ok("daemon.status", json!({}));
            tally.served += 1;
        }
    }
    tally
}

/// Connections that end abruptly, chosen at random: at once, after a request, in the middle of
/// a line, after pipelining a thousand requests, or after closing their writing side (which must
/// still get its reply).
fn dropping_client(socket: &Path, seed: u64, rounds: usize) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let status = request(1, "daemon.status", &json!({}));
    for _ in 0..rounds {
        let stream = UnixStream::connect(socket).expect("connect");
        match rng.below(5) {
            0 => {}
            1 => write_quietly(&stream, &status),
            2 => write_quietly(&stream, &status[..1 + rng.below(status.len() - 2)]),
            3 => write_quietly(&stream, &status.repeat(1000)),
            _ => {
                write_quietly(&stream, &status);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let mut conn_bytes = read_raw_to_end(&stream);
                assert_eq!(conn_bytes.pop(), Some(b'\n'), "a whole reply");
                let reply: Value = serde_json::from_slice(&conn_bytes).unwrap();
                if is_refusal(&reply) {
                    tally.refused += 1;
                    continue;
                }
                assert_eq!(reply["id"], 1, "{reply}");
            }
        }
        drop(stream);
        tally.served += 1;
    }
    tally
}

/// Held connections, set up before the burst so that the burst does not refuse them.
struct Held {
    stream: UnixStream,
}

/// A client that floods requests and never reads a reply. Once its buffers and the daemon's
/// bounded queue are full, the daemon stops reading it, and after `write_timeout_s` it drops
/// it: a write then fails. Returns how long the flood lasted.
fn never_reading_client(held: Held) -> Duration {
    let started = Instant::now();
    let stream = held.stream;
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    let chunk = request(2, "features.list", &json!({})).repeat(100);
    let mut written = 0usize;
    loop {
        match (&stream).write_all(&chunk) {
            Ok(()) => written += chunk.len(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return started.elapsed();
            }
            Err(e) => panic!("a client that never reads was not dropped ({e})"),
        }
        assert!(
            written < 64 << 20,
            "the daemon read 64 MiB from a client that never reads its replies"
        );
    }
}

/// One line, read a byte at a time so that nothing after it is taken from the socket.
fn read_line_unbuffered(stream: &UnixStream) -> Value {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match (&*stream).read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            other => panic!("the daemon closed or failed ({other:?}) after {line:?}"),
        }
    }
    serde_json::from_slice(&line).unwrap()
}

/// Opens a connection and sends `line` (a request with id 1), retrying while the daemon
/// refuses, until it answers. Nothing after the answer is read.
fn hold(socket: &Path, line: &[u8]) -> Held {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let stream = UnixStream::connect(socket).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write_quietly(&stream, line);
        loop {
            let message = read_line_unbuffered(&stream);
            if message["id"] == 1 {
                return Held { stream };
            }
            if is_refusal(&message) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "refused until the deadline");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a subscriber that never read finds once it reads: the entries in order from seq 0, and
/// then either `trace.subscription_ended` with reason `too_slow` or the connection closed.
/// Returns how it ended and how many entries it got.
fn slow_subscriber_outcome(held: &Held) -> (&'static str, usize) {
    let bytes = read_raw_to_end(&held.stream);
    let mut entries = 0u64;
    let mut ended = "closed";
    // A dropped connection's last line may be cut short; every whole one must be JSON.
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if line.last() != Some(&b'\n') {
            break;
        }
        let message: Value = serde_json::from_slice(line).unwrap();
        match message["method"].as_str() {
            Some("trace.entry") => {
                assert_eq!(
                    message["params"]["seq"], entries,
                    "entries in order, no gap"
                );
                entries += 1;
            }
            Some("trace.subscription_ended") => {
                assert_eq!(message["params"]["reason"], "too_slow", "{message}");
                ended = "too_slow";
            }
            _ => assert_eq!(message["id"], 1, "{message}"),
        }
    }
    (ended, entries as usize)
}

/// Connections beyond `max_connections` while the good clients and the held hostile ones keep
/// their slots: each is either admitted (and answers) or refused with -32005 and closed. At least
/// `BURST_EXTRA` must be refused. Returns (admitted, refused).
fn burst(socket: &Path) -> (usize, usize) {
    let status = request(1, "daemon.status", &json!({}));
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..HEADROOM + BURST_EXTRA {
        let mut conn = Conn::open(socket).expect("connect");
        write_quietly(conn.stream(), &status);
        let reply = conn.read();
        if is_refusal(&reply) {
            assert_eq!(conn.try_read(), None, "closed after -32005");
            refused += 1;
        } else {
            assert_eq!(reply["id"], 1, "{reply}");
            held.push(conn);
        }
    }
    assert!(refused >= BURST_EXTRA, "only {refused} refused");
    (held.len(), refused)
}

/// Every entry of the trace, page by page.
fn trace_entries(conn: &mut Conn) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut from = 0;
    loop {
        let page = conn.ok("trace.read", json!({"from_seq": from, "limit": 1000}));
        entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_seq"].as_u64() {
            Some(next) => from = next,
            None => return entries,
        }
    }
}

#[test]
fn hundreds_of_clients_decide_while_hostile_clients_abuse_the_socket() {
    let scale = scale();
    let good = GOOD_CLIENTS * scale;
    let max_connections = good + HEADROOM;
    let memory_bound_kib = MEMORY_BASE_KIB + MEMORY_PER_CONNECTION_KIB * max_connections as u64;
    let mut daemon = with_policy(
        "pro",
        POLICY,
        &format!("[daemon]\nmax_connections = {max_connections}\nwrite_timeout_s = 1\n"),
    );
    let socket = daemon.socket();
    let pid = daemon.pid();
    let idle_kib = memory_kib(pid, "VmRSS:").unwrap_or(0);
    let sampler = MemorySampler::start(pid);
    let started = Instant::now();

    // The good clients connect first and keep their slots to the end, so that the burst cannot
    // take them; they start deciding once every hostile client has started.
    let start = Arc::new(Barrier::new(good + 1));
    let good_clients: Vec<_> = (0..good)
        .map(|client| {
            let (socket, start) = (socket.clone(), Arc::clone(&start));
            spawn(format!("good-{client}"), move || {
                good_client(&socket, client, &start)
            })
        })
        .collect();
    start.wait();
    let connected = started.elapsed();

    // Hostile clients that hold a connection are admitted before the burst begins.
    let subscribers: Vec<Held> = (0..8)
        .map(|_| {
            hold(
                &socket,
                &request(1, "trace.subscribe", &json!({"from_seq": 0})),
            )
        })
        .collect();
    let never_reading: Vec<Held> = (0..4)
        .map(|_| hold(&socket, &request(1, "daemon.status", &json!({}))))
        .collect();
    let floods: Vec<_> = never_reading
        .into_iter()
        .enumerate()
        .map(|(n, held)| {
            spawn(format!("never-reads-{n}"), move || {
                never_reading_client(held)
            })
        })
        .collect();
    let bursting = {
        let socket = socket.clone();
        spawn("burst".to_owned(), move || burst(&socket))
    };
    let mut hostile: Vec<(&'static str, JoinHandle<Tally>)> = Vec::new();
    for n in 0..2u64 {
        let socket = socket.clone();
        hostile.push((
            "garbage lines",
            spawn(format!("garbage-{n}"), move || {
                garbage_client(&socket, 0x5EED_0001 + n, 50 * scale)
            }),
        ));
        let socket = daemon.socket();
        hostile.push((
            "abrupt drops",
            spawn(format!("dropping-{n}"), move || {
                dropping_client(&socket, 0x5EED_0100 + n, 100 * scale)
            }),
        ));
        let socket = daemon.socket();
        hostile.push((
            "lines over 1 MiB",
            spawn(format!("too-long-{n}"), move || {
                too_long_client(&socket, 3 * scale)
            }),
        ));
        let socket = daemon.socket();
        hostile.push((
            "lines near 1 MiB",
            spawn(format!("near-limit-{n}"), move || {
                near_limit_client(&socket, 0x5EED_0200 + n, scale)
            }),
        ));
    }
    start.wait();
    let deciding = Instant::now();

    let mut answered = BTreeMap::new();
    let mut good_connections = Vec::new();
    for client in good_clients {
        let (answers, conn) = client.join().expect("a good client failed");
        for (prompt, seq) in answers {
            assert!(answered.insert(prompt, seq).is_none());
        }
        good_connections.push(conn);
    }
    let decided = deciding.elapsed();
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    for (kind, handle) in hostile {
        let tally = handle
            .join()
            .expect("a hostile client saw the protocol broken");
        let sum = tallies.entry(kind).or_default();
        sum.served += tally.served;
        sum.refused += tally.refused;
    }
    let flood_times: Vec<Duration> = floods
        .into_iter()
        .map(|flood| flood.join().expect("a client that never reads"))
        .collect();
    let (burst_admitted, burst_refused) = bursting.join().expect("the burst");
    drop(good_connections);
    // The subscribers that never read are dropped too (their queue filled, then the write timed
    // out): only then does reading them show how their subscriptions ended.
    let mut conn = daemon.conn();
    eventually("every hostile connection is gone", || {
        conn.ok("daemon.status", json!({}))["connections"] == 1
    });
    let subscriber_outcomes: Vec<_> = subscribers.iter().map(slow_subscriber_outcome).collect();
    let (peak_sampled_kib, samples) = sampler.finish();
    let hwm_kib = memory_kib(pid, "VmHWM:").expect("VmHWM");
    let elapsed = started.elapsed();

    println!(
        "load and abuse (scale {scale}): {good} clients, {} decisions answered; connected in \
         {:.1} s, decisions took {:.1} s, whole run {:.1} s",
        answered.len(),
        connected.as_secs_f64(),
        decided.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    println!(
        "daemon memory: idle {}, peak sampled VmRSS {} ({samples} samples), VmHWM {}, bound {}",
        mib(idle_kib),
        mib(peak_sampled_kib),
        mib(hwm_kib),
        mib(memory_bound_kib),
    );
    for (kind, tally) in &tallies {
        println!(
            "hostile {kind}: {} served, {} refused while the burst held every slot",
            tally.served, tally.refused
        );
    }
    println!(
        "never reading: dropped after {:?}",
        flood_times
            .iter()
            .map(|t| format!("{:.1} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
    );
    println!("slow subscribers (how it ended, entries received): {subscriber_outcomes:?}");
    println!("burst: {burst_admitted} admitted, {burst_refused} refused with -32005");

    // Every answered decision is in the trace exactly once, at the seq it was answered with,
    // and nothing else is: no hostile line reached it.
    let checking = Instant::now();
    let entries = trace_entries(&mut conn);
    let mut stored: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for entry in &entries {
        stored
            .entry(entry["prompt_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(entry["seq"].as_u64().unwrap());
    }
    assert_eq!(answered.len(), good * DECISIONS_PER_CLIENT);
    for (prompt, seq) in &answered {
        assert_eq!(stored.get(prompt), Some(&vec![*seq]), "{prompt}");
    }
    assert_eq!(entries.len(), answered.len(), "entries nobody asked for");
    let verified = conn.ok("trace.verify", json!({}));
    assert_eq!(verified["valid"], true, "{verified}");
    println!(
        "trace: {} entries read and verified in {:.1} s",
        entries.len(),
        checking.elapsed().as_secs_f64()
    );

    assert!(daemon.is_running());
    let log = daemon.log();
    assert!(
        log.lines().all(|line| !line.contains("ERROR")),
        "errors in the daemon's log"
    );
    assert_eq!(conn.ok("daemon.status", json!({}))["connections"], 1);
    assert!(
        log.contains("client stopped reading; closing connection"),
        "the clients that never read were dropped for it"
    );

    assert!(
        hwm_kib < memory_bound_kib,
        "peak RSS {} over the bound {}",
        mib(hwm_kib),
        mib(memory_bound_kib)
    );
}

/// A client that pipelines 20,000 small requests without reading is pushed back on: the daemon
/// stops reading it while its replies wait, instead of buffering them all. Then it reads
/// everything, and every reply arrives. Each request is a `trace.read` of eight entries, so that
/// every reply is a few KiB and buffering them all would show plainly.
#[test]
fn a_client_writing_faster_than_it_reads_gets_backpressure_not_unbounded_memory() {
    const REQUESTS: u64 = 20_000;
    let daemon = TestDaemon::start_with(
        Options::default()
            .edition("pro")
            .config("[daemon]\nwrite_timeout_s = 10\n"),
    );
    let pid = daemon.pid();
    let mut conn = daemon.conn();
    for n in 0..8 {
        conn.ok(
            "decision.record",
            json!({
                "session_id": "backpressure",
                "prompt_id": format!("p{n}"),
                "prompt_type": "yes_no",
                "action_taken": "auto_reply",
            }),
        );
    }
    let read = json!({"from_seq": 0, "limit": 8});
    let reply_bytes = serde_json::to_vec(&conn.ok("trace.read", read.clone()))
        .unwrap()
        .len();
    let baseline_kib = memory_kib(pid, "VmRSS:").unwrap();
    let sampler = MemorySampler::start(pid);

    let writer_stream = conn.stream().try_clone().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let sent = Arc::clone(&sent);
        std::thread::spawn(move || {
            for first in (0..REQUESTS).step_by(100) {
                let chunk: Vec<u8> = (first..first + 100)
                    .flat_map(|id| request(id, "trace.read", &read))
                    .collect();
                (&writer_stream).write_all(&chunk).unwrap();
                sent.store(first + 100, Ordering::Relaxed);
            }
        })
    };
    // Wait until the writer is held back: no progress for half a second.
    let mut last = (0, Instant::now());
    let stalled_at = loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = sent.load(Ordering::Relaxed);
        assert!(
            now < REQUESTS,
            "all {REQUESTS} requests were taken while no reply was read"
        );
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(500) {
            break now;
        }
        assert!(last.1.elapsed() < DEADLINE);
    };
    let stalled_kib = memory_kib(pid, "VmRSS:").unwrap();

    let mut seen = vec![false; REQUESTS as usize];
    for _ in 0..REQUESTS {
        let reply = conn.read();
        let id = reply["id"].as_u64().unwrap_or_else(|| panic!("{reply}"));
        assert_eq!(reply["result"]["entries"].as_array().map(Vec::len), Some(8));
        assert!(
            !std::mem::replace(&mut seen[id as usize], true),
            "{id} twice"
        );
    }
    writer.join().expect("every request written");
    let (peak_kib, samples) = sampler.finish();
    conn.ok("daemon.status", json!({}));

    let growth_kib = peak_kib.saturating_sub(baseline_kib);
    let unbounded_kib = REQUESTS * reply_bytes as u64 / 1024;
    println!(
        "backpressure: writer held back after {stalled_at} of {REQUESTS} requests; daemon RSS \
         {} before, {} while held back, peak {} ({samples} samples); buffering every reply would \
         take {} more",
        mib(baseline_kib),
        mib(stalled_kib),
        mib(peak_kib),
        mib(unbounded_kib),
    );
    // Bounded: at most 64 requests of the connection run at once (each `trace.read` on a blocking
    // thread) and 256 replies wait; measured about 12 MiB of growth on a debug build.
    assert!(
        growth_kib < 32 * 1024,
        "RSS grew by {} while a client did not read",
        mib(growth_kib)
    );
}

/// A subscriber that disconnects ends its subscription and frees its connection slot even
/// when no new entry comes to reveal that it is gone. (The feed used to hold the connection until
/// the next entry failed to write, so that `max_connections` such clients on a quiet trace
/// locked every other client out.)
#[test]
fn a_subscriber_that_disconnects_frees_its_slot_on_a_quiet_trace() {
    let daemon = TestDaemon::start_with(
        Options::default()
            .edition("pro")
            .config("[daemon]\nmax_connections = 2\n"),
    );
    for round in 0..5 {
        eventually(&format!("a slot for subscriber {round}"), || {
            let mut subscriber = Conn::open(&daemon.socket()).unwrap();
            matches!(subscriber.try_call("trace.subscribe", json!({})), Ok(Ok(_)))
        });
    }
    eventually("every subscriber is gone", || {
        Conn::open(&daemon.socket())
            .and_then(|mut conn| conn.try_call("daemon.status", json!({})))
            .is_ok_and(|status| status.is_ok_and(|status| status["connections"] == 1))
    });
}

/// A subscriber that closes its writing side gets the answers to what it sent, then the end of
/// its subscription and of the connection.
#[test]
fn a_subscriber_that_closes_its_side_gets_its_answer_then_the_end() {
    let daemon = TestDaemon::start_with(Options::default().edition("pro"));
    let stream = UnixStream::connect(daemon.socket()).unwrap();
    write_quietly(&stream, &request(1, "trace.subscribe", &json!({})));
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let bytes = read_raw_to_end(&stream);
    let messages: Vec<Value> = bytes
        .split_inclusive(|b| *b == b'\n')
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["id"], 1, "{messages:?}");
    assert!(messages[0]["result"].is_object(), "{messages:?}");
    assert_eq!(messages[1]["method"], "trace.subscription_ended");
    assert_eq!(messages[1]["params"]["reason"], "closed");
}

/// Large replies that a client never reads: the reply queue is bounded in bytes, not only in
/// lines. (With a bound of 256 lines alone, three such clients took the daemon from about 24 to
/// 300 MiB: 256 queued `trace.read` pages of some 700 KB each, per connection.)
#[test]
fn large_replies_a_client_never_reads_cost_a_bounded_amount_of_memory() {
    const CLIENTS: usize = 3;
    const REQUESTS: u64 = 400;
    let daemon = TestDaemon::start_with(
        Options::default()
            .edition("pro")
            .config("[daemon]\nwrite_timeout_s = 60\n\n[trace]\ndurability = \"none\"\n"),
    );
    let pid = daemon.pid();
    let mut conn = daemon.conn();
    // A thousand entries with long prompt ids make each page of 1,000 entries large.
    let filler = "x".repeat(200);
    for n in 0..1_000 {
        conn.ok(
            "decision.record",
            json!({
                "session_id": "large-replies",
                "prompt_id": format!("p{n}-{filler}"),
                "prompt_type": "yes_no",
                "action_taken": "auto_reply",
            }),
        );
    }
    let read = json!({"from_seq": 0, "limit": 1000});
    let page_bytes = serde_json::to_vec(&conn.ok("trace.read", read.clone()))
        .unwrap()
        .len() as u64;
    let baseline_kib = memory_kib(pid, "VmRSS:").unwrap();
    let sampler = MemorySampler::start(pid);
    let mut held = Vec::new();
    for _ in 0..CLIENTS {
        let stream = UnixStream::connect(daemon.socket()).unwrap();
        let writer = stream.try_clone().unwrap();
        let read = read.clone();
        // Written from a thread: the daemon stops reading once the queue is full, and the
        // kernel's buffer then blocks the writer, as it should.
        std::thread::spawn(move || {
            for id in 0..REQUESTS {
                if (&writer)
                    .write_all(&request(id, "trace.read", &read))
                    .is_err()
                {
                    return;
                }
            }
        });
        held.push(stream);
    }
    // Let every connection fill what it can: until the daemon's memory has not grown for three
    // seconds (building a page takes a while in a debug build).
    let started = Instant::now();
    let mut settled = (memory_kib(pid, "VmRSS:").unwrap(), Instant::now());
    while settled.1.elapsed() < Duration::from_secs(3) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "memory kept growing"
        );
        std::thread::sleep(Duration::from_millis(100));
        let now = memory_kib(pid, "VmRSS:").unwrap();
        if now > settled.0 + 1024 {
            settled = (now, Instant::now());
        }
    }
    let (peak_kib, samples) = sampler.finish();
    conn.ok("daemon.status", json!({}));
    drop(held);

    let growth_kib = peak_kib.saturating_sub(baseline_kib);
    let lines_only_kib = CLIENTS as u64 * 256 * page_bytes / 1024;
    println!(
        "large replies: pages of {} KiB; daemon RSS {} before, peak {} with {CLIENTS} clients \
         not reading ({samples} samples); a queue bounded by lines alone would hold {}",
        page_bytes / 1024,
        mib(baseline_kib),
        mib(peak_kib),
        mib(lines_only_kib),
    );
    // Per connection: 4 MiB queued, plus at most four page reads in flight, each holding its
    // page while it waits for room (twice, to allow for the structure the line was encoded
    // from); far below the 256 pages a line count alone would allow.
    let bound_kib = CLIENTS as u64 * (4 * 1024 + 4 * 2 * page_bytes / 1024) + 32 * 1024;
    assert!(
        growth_kib < bound_kib,
        "RSS grew by {} (bound {}) while {CLIENTS} clients did not read",
        mib(growth_kib),
        mib(bound_kib)
    );
    assert!(
        bound_kib < lines_only_kib,
        "the test would not tell the two apart"
    );
}
