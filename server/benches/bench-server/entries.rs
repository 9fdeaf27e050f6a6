//! Realistic decision entries, as `atlasbridged` writes them to its trace: every member of
//! trace-format.md, sealed and hash-chained with the protocol crate. Choices come from a fixed
//! seed, so every run sends the same mix.

use atlasbridge_protocol::trace::{GENESIS_PREV_HASH, seal};
use serde_json::{Map, Value, json};

/// Agents of a fleet; each runtime serves a few of them.
pub(crate) const AGENTS: usize = 50;

/// Decisions per session, on average.
pub(crate) const SESSION_LENGTH: u64 = 250;

/// `action_taken` and its share in percent.
pub(crate) const ACTIONS: [(&str, u64); 4] = [
    ("auto_reply", 70),
    ("require_human", 15),
    ("notify_only", 10),
    ("deny", 5),
];

/// `risk_level` and its share in percent.
pub(crate) const RISKS: [(&str, u64); 5] = [
    ("none", 40),
    ("low", 30),
    ("medium", 20),
    ("high", 8),
    ("critical", 2),
];

/// The name of agent `n`.
pub(crate) fn agent_name(n: usize) -> String {
    const KINDS: [&str; 5] = ["claude-code", "codex", "aider", "cursor", "gemini-cli"];
    format!("{}-{:02}", KINDS[n % KINDS.len()], n / KINDS.len())
}

/// A small, fast, seeded generator (SplitMix64): the benchmark needs a repeatable mix, not
/// cryptographic randomness.
#[derive(Debug, Clone)]
pub(crate) struct Mix(u64);

impl Mix {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `shares` (name, percent), drawn by its share.
    pub(crate) fn pick<'a>(&mut self, shares: &[(&'a str, u64)]) -> &'a str {
        let mut roll = self.below(100);
        for (name, share) in shares {
            if roll < *share {
                return name;
            }
            roll -= share;
        }
        shares[shares.len() - 1].0
    }

    /// A UUID-shaped id (version 4 layout).
    pub(crate) fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// One sealed entry and the columns the server derives from it (for the `COPY` baseline).
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    /// The stored line (canonical JSON, `entry_hash` last), without its newline.
    pub line: String,
    pub entry_id: String,
    pub entry_hash: String,
    pub prev_hash: String,
    pub timestamp: String,
    pub session_id: String,
    pub agent_id: String,
    pub action: &'static str,
    pub risk: &'static str,
}

/// The decisions of one runtime: `count` entries from seq 0, one every `spacing_us`
/// microseconds from `start_us` (Unix microseconds), in sessions of about
/// [`SESSION_LENGTH`] decisions by a few agents.
pub(crate) fn chain(runtime: usize, count: u64, start_us: i64, spacing_us: i64) -> Vec<Sealed> {
    let mut mix = Mix::new(0xA71A5 ^ (runtime as u64).wrapping_mul(0x1000_0000_01B3));
    let mut prev = GENESIS_PREV_HASH.to_owned();
    let mut session = mix.uuid();
    let mut agent = agent_name((runtime * 3) % AGENTS);
    let mut entries = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for seq in 0..count {
        if mix.below(SESSION_LENGTH) == 0 {
            session = mix.uuid();
            agent = agent_name((runtime * 3 + mix.below(3) as usize) % AGENTS);
        }
        let jitter = i64::try_from(mix.below(1_000_000)).unwrap_or(0);
        let time = start_us + i64::try_from(seq).unwrap_or(0) * spacing_us + jitter;
        let body = decision(&mut mix, seq, &prev, &session, &agent, time);
        let sealed = seal(&body);
        let mut line = String::from_utf8(sealed.line).expect("a sealed line is UTF-8");
        line.pop();
        let text = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
        entries.push(Sealed {
            entry_id: text("entry_id"),
            timestamp: text("timestamp"),
            action: static_name(&ACTIONS, body["action_taken"].as_str()),
            risk: static_name(&RISKS, body["risk_level"].as_str()),
            session_id: session.clone(),
            agent_id: agent.clone(),
            prev_hash: std::mem::replace(&mut prev, sealed.entry_hash.clone()),
            entry_hash: sealed.entry_hash,
            line,
        });
    }
    entries
}

fn static_name(shares: &[(&'static str, u64)], name: Option<&str>) -> &'static str {
    shares
        .iter()
        .find(|(known, _)| Some(*known) == name)
        .map_or("", |(known, _)| known)
}

/// RFC 3339 UTC with microseconds, as entries write times.
pub(crate) fn rfc3339(unix_us: i64) -> String {
    jiff::Timestamp::from_microsecond(unix_us)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

/// One decision's members (all but `entry_hash`), as the daemon writes them.
fn decision(
    mix: &mut Mix,
    seq: u64,
    prev: &str,
    session: &str,
    agent: &str,
    time_us: i64,
) -> Map<String, Value> {
    const PROMPT_TYPES: [&str; 4] = ["yes_no", "confirm_enter", "multiple_choice", "free_text"];
    const RULES: [&str; 5] = [
        "allow-tests",
        "allow-reads",
        "ask-on-push",
        "deny-rm-rf",
        "",
    ];
    const REASONS: [&str; 4] = [
        "git_push",
        "destructive_delete",
        "network_egress",
        "secrets_path",
    ];
    let action = mix.pick(&ACTIONS);
    let risk = mix.pick(&RISKS);
    let reasons: Vec<&str> = match risk {
        "none" | "low" => Vec::new(),
        _ => vec![REASONS[mix.below(REASONS.len() as u64) as usize]],
    };
    let confidence = ["high", "medium", "low"][mix.below(3) as usize];
    let branch = ["main", "feature/checkout", "fix/flaky-test"][mix.below(3) as usize];
    let body = json!({
        "trace_version": 2,
        "seq": seq,
        "entry_id": mix.uuid(),
        "timestamp": rfc3339(time_us),
        "session_id": session,
        "agent_id": agent,
        "prompt_id": format!("prompt-{seq}-{:08x}", mix.next() as u32),
        "prompt_type": PROMPT_TYPES[mix.below(4) as usize],
        "policy_name": "fleet-default",
        "policy_version": "7",
        "policy_hash": "5e1b0c3f7d2a9e8b4c6f1a0d3e7b2c9f5a8d1e4b7c0f3a6d9e2b5c8f1a4d7e0b",
        "matched_rule": RULES[mix.below(RULES.len() as u64) as usize],
        "autonomy_mode": if mix.below(10) < 8 { "full" } else { "assist" },
        "policy_action": action,
        "action_taken": action,
        "reply_value": if action == "auto_reply" { "y" } else { "" },
        "confidence": confidence,
        "risk_level": risk,
        "risk_reasons": reasons,
        "escalation_status": if action == "require_human" { "pending" } else { "" },
        "human_actor": "",
        "ci_status_snapshot": if mix.below(2) == 0 { "passing" } else { "" },
        "branch": branch,
        "idempotency_key": "",
        "replay_safe": action == "auto_reply",
        "prev_hash": prev,
    });
    match body {
        Value::Object(members) => members,
        _ => Map::new(),
    }
}
