//! The cloud uplink against the real daemon: off by default with no network at all, and, when
//! on, streaming to the test peer (`atlasbridge_e2e::cloud_peer`) on 127.0.0.1 through faults.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use atlasbridge_e2e::cloud_peer::{
    CloseMidBatch, CloudPeer, OutgoingSigning, PeerConfig, PolicySigning, Refusal, Throttle,
};
use atlasbridge_protocol::cloud::messages::Stream;
use serde_json::{Value, json};

use crate::support::{Options, Sandbox, TestDaemon, with_policy};

pub(crate) const POLICY: &str = r#"policy_version: "1"
name: e2e-cloud
autonomy_mode: full
rules:
  - id: yes
    match:
      prompt_type: [yes_no]
      min_confidence: high
    action:
      type: auto_reply
      value: "y"
"#;

fn event(session: &str, prompt: &str) -> Value {
    json!({
        "session_id": session,
        "prompt_id": prompt,
        "prompt_type": "yes_no",
        "prompt_text": "Continue? [y/n]",
        "confidence": "high",
    })
}

/// The inodes of the sockets the process holds open.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let Ok(target) = std::fs::read_link(fd.unwrap().path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            inodes.insert(inode.parse().unwrap());
        }
    }
    inodes
}

/// The inodes listed in one of `/proc/<pid>/net/{tcp,tcp6,udp,udp6,raw,…}` (column 10).
fn inet_inodes(pid: u32, table: &str) -> BTreeSet<u64> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
        return BTreeSet::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(9)?.parse().ok())
        .collect()
}

/// The inodes of Unix sockets with their paths (`/proc/<pid>/net/unix`: inode is column 7).
fn unix_sockets(pid: u32) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode = fields.get(6)?.parse().ok()?;
            Some((inode, fields.get(7).copied().unwrap_or("").to_owned()))
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn with_the_cloud_off_the_daemon_holds_no_socket_but_its_own_and_decides_the_same() {
    // A full [cloud] section, only not enabled: nothing of it may reach the network.
    let off = "[cloud]\nenabled = false\nendpoint = \"wss://cloud.invalid/v1/connect\"\norg_id = \"org\"\n";
    let daemon = with_policy("enterprise", POLICY, off);
    let mut conn = daemon.conn();
    let answer = conn.ok("decision.evaluate", event("s", "p1"));
    let pid = daemon.pid();

    let sockets = socket_inodes(pid);
    let unix = unix_sockets(pid);
    let socket_path = daemon.socket().display().to_string();
    for inode in &sockets {
        let entry = unix.iter().find(|(i, _)| i == inode);
        assert!(
            entry.is_some(),
            "socket inode {inode} of the daemon is not a Unix socket: {sockets:?}"
        );
    }
    // The listener and the connections it accepted (Linux lists those under the listener's
    // path too) are the only named Unix sockets; unnamed ones are the runtime's own pairs.
    let named: BTreeSet<_> = unix
        .iter()
        .filter(|(i, path)| sockets.contains(i) && !path.is_empty())
        .map(|(_, path)| path.clone())
        .collect();
    assert_eq!(named, BTreeSet::from([socket_path]), "{unix:?}");
    for table in [
        "tcp", "tcp6", "udp", "udp6", "raw", "raw6", "udplite", "udplite6",
    ] {
        let inet = inet_inodes(pid, table);
        assert!(
            sockets.is_disjoint(&inet),
            "the daemon holds a {table} socket: {:?}",
            sockets.intersection(&inet).collect::<Vec<_>>()
        );
    }
    assert!(!daemon.sandbox.data_dir().join("cloud").exists());
    let status = conn.ok("cloud.status", json!({}));
    assert_eq!(status["enabled"], false, "{status}");
    assert_eq!(status["state"], "disabled", "{status}");
    let text = daemon.cli(&["cloud", "status"]);
    text.assert_code(0);
    assert_eq!(text.stdout, "Cloud governance: disabled\n");

    // The same decision from a daemon without any [cloud] section: the same answer, apart from
    // what identifies the entry (its id, and so its hash).
    let plain = with_policy("enterprise", POLICY, "");
    let plain_answer = plain.conn().ok("decision.evaluate", event("s", "p1"));
    let strip = |mut v: Value| {
        for key in ["entry_id", "entry_hash"] {
            v.as_object_mut().unwrap().remove(key);
        }
        v
    };
    assert_eq!(strip(answer), strip(plain_answer));
}

#[test]
fn a_bad_cloud_section_names_the_line_and_the_key() {
    let sandbox = Sandbox::new();
    let daemon = TestDaemon::unstarted(
        sandbox,
        Options::default().config(
            "[cloud]\nenabled = true\nendpoint = \"ws://cloud.example/v1/connect\"\norg_id = \"o\"\n",
        ),
    );
    let output = daemon.command().output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(":3:"), "{stderr}");
    assert!(
        stderr.contains("only allowed for a loopback host"),
        "{stderr}"
    );
}

/// `api_key_keyring = true`: a daemon built without the `keyring` feature refuses the config at
/// that line; one built with it starts, and the uplink says which keyring entry it could not read
/// (no keyring is reachable from the sandbox's clean environment, or the entry is missing).
#[test]
fn a_key_in_the_keyring_is_refused_without_the_feature_or_looked_up_by_service_and_account() {
    let config = "[cloud]\nenabled = true\nendpoint = \"ws://127.0.0.1:9/v1/connect\"\n\
                  org_id = \"e2e-keyring-org\"\napi_key_keyring = true\n";
    if !atlasbridged::cloud::keyring::BUILT {
        let daemon = TestDaemon::unstarted(Sandbox::new(), Options::default().config(config));
        let output = daemon.command().output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(":5:"), "{stderr}");
        assert!(
            stderr.contains("the keyring feature is not built into this atlasbridged"),
            "{stderr}"
        );
        return;
    }
    let daemon = TestDaemon::start_in(
        Sandbox::new(),
        Options::default().edition("enterprise").config(config),
    );
    crate::support::eventually("the status names the keyring entry", || {
        let status = daemon.conn().ok("cloud.status", json!({}));
        status["state"] == "disconnected"
            && status["reason"] == "misconfigured"
            && status["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("service \"atlasbridge\", account \"e2e-keyring-org\""))
    });
}

// With the uplink on, against the test peer.

/// How long a test waits for the peer to catch up.
pub(crate) const CATCH_UP: Duration = Duration::from_secs(60);

/// The `[cloud]` section pointing at `peer`, with one-second heartbeats.
fn cloud_config(peer: &CloudPeer, extra: &str) -> String {
    format!(
        "[cloud]\nenabled = true\nendpoint = \"{}\"\norg_id = \"{}\"\nserver_public_key = \"{}\"\nheartbeat_s = 1\n{extra}",
        peer.ws_url(),
        peer.org_id(),
        peer.server_public_key(),
    )
}

/// An enterprise daemon linked to `peer`, with `extra` appended to its `[cloud]` section and
/// `more` after it.
pub(crate) fn linked(peer: &CloudPeer, extra: &str, more: &str) -> TestDaemon {
    let sandbox = Sandbox::new();
    let policy = sandbox.write("policy.yaml", POLICY);
    let more = format!("[policy]\nfile = \"{}\"\n{more}", policy.display());
    linked_in(sandbox, peer, extra, &more)
}

/// Like [`linked`], with no local policy file (the built-in default is active).
fn linked_in(sandbox: Sandbox, peer: &CloudPeer, extra: &str, more: &str) -> TestDaemon {
    let config = format!("{}\n{more}", cloud_config(peer, extra));
    TestDaemon::start_in(
        sandbox,
        Options::default()
            .edition("enterprise")
            .env("ATLASBRIDGE_CLOUD_API_KEY", &peer.api_key())
            .config(&config),
    )
}

/// Makes `count` decisions in session `session`.
pub(crate) fn decide(daemon: &TestDaemon, session: &str, count: usize) {
    let mut conn = daemon.conn();
    for i in 0..count {
        conn.ok("decision.evaluate", event(session, &format!("p{i}")));
    }
}

/// An agent deciding in the background until the returned flag is set.
fn keep_deciding(daemon: &TestDaemon, session: &str) -> Agent {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let socket = daemon.socket();
    let session = session.to_owned();
    let flag = std::sync::Arc::clone(&stop);
    let agent = std::thread::spawn(move || {
        let mut conn = crate::support::Conn::open(&socket).unwrap();
        let mut made = 0;
        while !flag.load(Ordering::Relaxed) {
            let answer = conn.ok("decision.evaluate", event(&session, &format!("p{made}")));
            assert_eq!(answer["action"], "auto_reply", "{answer}");
            made += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        made
    });
    (stop, agent)
}

/// A background agent: its stop flag and its thread, which returns how many decisions it made.
type Agent = (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<usize>,
);

fn stop_deciding(agent: Agent) -> usize {
    stop_deciding_allowing_failure(agent).expect("every decision of the agent succeeded")
}

/// The local chain of `stream`: (seq, entry_hash) of every entry.
pub(crate) fn local_chain(daemon: &TestDaemon, stream: Stream) -> Vec<(u64, String)> {
    let method = match stream {
        Stream::Trace => "trace.read",
        Stream::Audit => "audit.read",
    };
    let mut conn = daemon.conn();
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let page = conn.ok(method, json!({"from_seq": from, "limit": 1000}));
        for entry in page["entries"].as_array().unwrap() {
            out.push((
                entry["seq"].as_u64().unwrap(),
                entry["entry_hash"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_seq"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    out
}

/// Waits until the peer holds the whole local trace, then checks it holds every entry exactly
/// once, in order, with the same hashes.
fn assert_peer_has_the_trace(daemon: &TestDaemon, peer: &CloudPeer) {
    let local = local_chain(daemon, Stream::Trace);
    assert!(
        peer.wait_for_entries(Stream::Trace, local.len(), CATCH_UP),
        "the peer has {} of {} entries; status: {}; the peer saw bad signatures {:?} and protocol errors {:?}",
        peer.entry_count(Stream::Trace),
        local.len(),
        daemon.conn().ok("cloud.status", json!({})),
        peer.bad_signatures().iter().take(3).collect::<Vec<_>>(),
        peer.protocol_errors().iter().take(3).collect::<Vec<_>>(),
    );
    let remote: Vec<(u64, String)> = peer
        .entries(Stream::Trace)
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["entry_hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(remote.len(), local.len(), "exactly once");
    assert_eq!(remote, local, "in order, the same entries");
    assert_eq!(peer.gaps(), Vec::<String>::new());
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn a_healthy_link_streams_both_chains_once_in_order_with_heartbeats() {
    let peer = CloudPeer::start();
    let daemon = linked(&peer, "", "");
    decide(&daemon, "s", 150);
    assert_peer_has_the_trace(&daemon, &peer);
    assert_eq!(peer.duplicates(Stream::Trace), 0);
    let audit = local_chain(&daemon, Stream::Audit);
    assert!(peer.wait_for_entries(Stream::Audit, audit.len(), CATCH_UP));
    assert!(
        peer.wait_until(|s| !s.received("heartbeat").is_empty(), CATCH_UP),
        "a heartbeat within a few seconds"
    );
    let heartbeat = &peer.received("heartbeat")[0];
    assert_eq!(heartbeat["edition"], "enterprise", "{heartbeat}");
    for (connection, sequences) in peer.received_sequences() {
        let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
        assert_eq!(sequences, expected, "connection {connection}");
    }
    assert_eq!(peer.bad_signatures(), Vec::<String>::new());
    crate::support::eventually("the status shows the link caught up", || {
        let status = daemon.conn().ok("cloud.status", json!({}));
        status["state"] == "connected"
            && status["trace"]["backlog"] == 0
            && status["last_heartbeat_acked"].is_string()
    });
    let text = daemon.cli(&["cloud", "status"]);
    text.assert_code(0);
    assert!(
        text.stdout.contains("Cloud:           connected"),
        "{}",
        text.stdout
    );
}

/// Runs an agent while `fault` is set on the peer for a while, then clears it, and checks the
/// peer ends up with the whole trace exactly once.
fn survives(fault: impl FnOnce(&CloudPeer), extra: &str) -> (TestDaemon, CloudPeer) {
    let peer = CloudPeer::start();
    let daemon = linked(&peer, extra, "");
    decide(&daemon, "before", 20);
    assert!(peer.wait_for_entries(Stream::Trace, 20, CATCH_UP));
    let agent = keep_deciding(&daemon, "during");
    fault(&peer);
    std::thread::sleep(Duration::from_millis(1500));
    peer.clear_faults();
    std::thread::sleep(Duration::from_millis(300));
    let made = stop_deciding(agent);
    assert!(made > 0);
    assert_peer_has_the_trace(&daemon, &peer);
    (daemon, peer)
}

#[test]
fn refused_connections_lose_nothing() {
    let (_daemon, peer) = survives(
        |peer| {
            peer.refuse(Some(Refusal::ServiceUnavailable));
            peer.disconnect();
        },
        "",
    );
    assert!(peer.connections() >= 2, "it reconnected");
}

#[test]
fn connections_dropped_at_accept_lose_nothing() {
    survives(
        |peer| {
            peer.refuse(Some(Refusal::DropConnections));
            peer.disconnect();
        },
        "",
    );
}

#[test]
fn a_connection_closed_in_the_middle_of_batches_loses_nothing() {
    let (_daemon, peer) = survives(
        |peer| {
            peer.close_mid_batch(Some(CloseMidBatch {
                after: 1,
                repeat: true,
                commit: false,
            }));
        },
        "",
    );
    assert!(peer.connections() >= 2, "it reconnected");
}

#[test]
fn a_batch_stored_but_never_acknowledged_is_not_stored_twice() {
    survives(
        |peer| {
            peer.close_mid_batch(Some(CloseMidBatch {
                after: 1,
                repeat: true,
                commit: true,
            }));
        },
        "",
    );
}

#[test]
fn delayed_acks_lose_nothing() {
    survives(|peer| peer.delay_acks(Duration::from_millis(300)), "");
}

#[test]
fn duplicated_acks_lose_nothing() {
    survives(|peer| peer.duplicate_acks(true), "");
}

#[test]
fn a_window_full_of_unacknowledged_entries_waits_for_acks() {
    let (daemon, peer) = survives(|peer| peer.withhold_acks(true), "buffer_events = 5\n");
    // While acks were withheld, no more than the window was in flight at any time.
    let max_batch = peer
        .received("audit_batch")
        .iter()
        .map(|b| b["entry_count"].as_u64().unwrap_or(0))
        .max()
        .unwrap();
    assert!(max_batch <= 5, "{max_batch}");
    drop(daemon);
}

#[test]
fn unsigned_and_badly_signed_messages_are_dropped_and_audited() {
    let (daemon, peer) = survives(|peer| peer.sign_outgoing(OutgoingSigning::WrongKey), "");
    let rejected: Vec<Value> = daemon
        .audit_events()
        .into_iter()
        .filter(|e| e["event_type"] == "cloud_message_rejected")
        .collect();
    assert!(!rejected.is_empty());
    assert_eq!(
        rejected[0]["details"]["reason"],
        "message signature does not verify"
    );
    let (daemon2, _peer2) = survives(|peer| peer.sign_outgoing(OutgoingSigning::Unsigned), "");
    assert!(
        daemon2
            .audit_events()
            .iter()
            .any(|e| e["details"]["reason"] == "message is unsigned")
    );
    drop(peer);
}

#[test]
fn a_revoked_token_is_replaced_and_nothing_is_lost() {
    let (_daemon, peer) = survives(|peer| peer.revoke_tokens(), "");
    assert!(
        peer.token_attempts().len() >= 2,
        "a fresh token was fetched"
    );
}

#[test]
fn retry_after_is_honoured_on_the_token_call_and_the_upgrade() {
    let peer = CloudPeer::start();
    peer.throttle_tokens(Some(Throttle::new(429, 1, 2)));
    peer.throttle_upgrades(Some(Throttle::new(503, 1, 2)));
    let daemon = linked(&peer, "", "");
    decide(&daemon, "s", 5);
    assert_peer_has_the_trace(&daemon, &peer);
    for (what, attempts) in [
        ("token", peer.token_attempts()),
        ("upgrade", peer.upgrade_attempts()),
    ] {
        assert!(attempts.len() >= 3, "{what}: {attempts:?}");
        for pair in attempts[..3].windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(950),
                "{what}: the next attempt came {gap:?} after a Retry-After of 1 s"
            );
        }
    }
}

#[test]
fn tokens_are_renewed_before_they_expire_without_dropping_the_connection() {
    let peer = CloudPeer::start_with(PeerConfig {
        token_lifetime_s: 5,
        ..PeerConfig::default()
    });
    let daemon = linked(&peer, "", "");
    decide(&daemon, "s", 3);
    let started = Instant::now();
    assert!(peer.wait_until(|s| s.token_attempts().len() >= 3, CATCH_UP));
    let attempts = peer.token_attempts();
    for pair in attempts.windows(2) {
        assert!(
            pair[1] - pair[0] < Duration::from_secs(5),
            "renewed {:?} after the last token, which lives 5 s",
            pair[1] - pair[0]
        );
    }
    assert_eq!(peer.connections(), 1, "the connection stayed up");
    assert!(started.elapsed() < CATCH_UP);
    decide(&daemon, "t", 3);
    assert_peer_has_the_trace(&daemon, &peer);
}

#[test]
fn a_daemon_restart_resumes_from_the_cursor_without_doubles() {
    let peer = CloudPeer::start();
    let mut daemon = linked(&peer, "", "");
    decide(&daemon, "a", 100);
    assert_peer_has_the_trace(&daemon, &peer);
    // The peer stores a batch before it acknowledges it: wait for the daemon to hear the ack.
    crate::support::eventually("the last ack arrives", || {
        daemon.conn().ok("cloud.status", json!({}))["trace"]["acked_seq"] == 99
    });
    daemon.stop();
    let cursor = std::fs::read_to_string(daemon.sandbox.data_dir().join("cloud/cursor")).unwrap();
    let cursor: Value = serde_json::from_str(&cursor).unwrap();
    assert_eq!(cursor["trace"], 99, "{cursor}");
    daemon.launch();
    decide(&daemon, "b", 100);
    assert_peer_has_the_trace(&daemon, &peer);
    assert_eq!(peer.duplicates(Stream::Trace), 0, "nothing was sent twice");

    // Killed in the middle of streaming: entries may be sent again, never stored twice.
    let agent = keep_deciding(&daemon, "c");
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill();
    let _ = stop_deciding_allowing_failure(agent);
    daemon.launch();
    decide(&daemon, "d", 20);
    assert_peer_has_the_trace(&daemon, &peer);
}

/// Like [`stop_deciding`], for an agent whose daemon was killed under it.
fn stop_deciding_allowing_failure((stop, agent): Agent) -> Option<usize> {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    agent.join().ok()
}

#[test]
fn a_cloud_restored_from_an_older_backup_is_refilled_from_the_trace() {
    let peer = CloudPeer::start();
    let daemon = linked(&peer, "", "");
    decide(&daemon, "a", 50);
    assert_peer_has_the_trace(&daemon, &peer);
    peer.stop();
    peer.forget_from(Stream::Trace, 20);
    peer.restart();
    decide(&daemon, "b", 5);
    assert_peer_has_the_trace(&daemon, &peer);
}

#[test]
fn a_peer_away_for_more_than_the_window_gets_the_backlog_and_memory_stays_bounded() {
    let peer = CloudPeer::start();
    let daemon = linked(&peer, "", "[trace]\ndurability = \"none\"\n");
    decide(&daemon, "warm", 10);
    assert!(peer.wait_for_entries(Stream::Trace, 10, CATCH_UP));
    peer.stop();
    let pid = daemon.pid();
    let agents: Vec<_> = (0..4)
        .map(|agent| {
            let socket = daemon.socket();
            std::thread::spawn(move || {
                let mut conn = crate::support::Conn::open(&socket).unwrap();
                for i in 0..3_000 {
                    conn.ok(
                        "decision.evaluate",
                        event(&format!("agent-{agent}"), &format!("p{i}")),
                    );
                }
            })
        })
        .collect();
    for agent in agents {
        agent.join().unwrap();
    }
    let before = vm_kib(pid, "VmRSS:");
    let status = daemon.conn().ok("cloud.status", json!({}));
    assert!(
        status["trace"]["backlog"].as_u64().unwrap() > 10_000,
        "{status}"
    );
    peer.restart();
    assert_peer_has_the_trace(&daemon, &peer);
    let peak = vm_kib(pid, "VmHWM:");
    assert!(
        peak < before + 64 * 1024,
        "catching up 12,000 entries took the daemon from {before} KiB to a peak of {peak} KiB"
    );
}

#[test]
fn the_kill_switch_is_obeyed_only_when_configured() {
    let peer = CloudPeer::start();
    let daemon = linked(&peer, "", "");
    decide(&daemon, "s", 1);
    assert!(peer.wait_for_entries(Stream::Trace, 1, CATCH_UP));
    assert!(peer.send_kill_switch("paused", "incident 7"));
    crate::support::eventually("the ignored switch is audited", || {
        daemon
            .audit_events()
            .iter()
            .any(|e| e["event_type"] == "cloud_kill_switch_ignored")
    });
    assert_eq!(
        daemon.conn().ok("autopilot.status", json!({}))["state"],
        "running"
    );

    let peer = CloudPeer::start();
    let daemon = linked(&peer, "honor_kill_switch = true\n", "");
    decide(&daemon, "s", 1);
    assert!(peer.wait_for_entries(Stream::Trace, 1, CATCH_UP));
    assert!(peer.send_kill_switch("paused", "incident 7"));
    crate::support::eventually("the autopilot is paused by the cloud", || {
        daemon.conn().ok("autopilot.status", json!({}))["state"] == "paused"
    });
    let status = daemon.conn().ok("autopilot.status", json!({}));
    assert_eq!(status["changed_by"], "cloud", "{status}");
    let answer = daemon
        .conn()
        .ok("decision.evaluate", event("s", "after-pause"));
    assert_eq!(answer["action"], "require_human", "{answer}");
    assert!(peer.send_kill_switch("running", "resolved"));
    crate::support::eventually("the autopilot runs again", || {
        daemon.conn().ok("autopilot.status", json!({}))["state"] == "running"
    });

    // A switch that is not signed by the server key changes nothing.
    peer.sign_outgoing(OutgoingSigning::WrongKey);
    assert!(peer.send_kill_switch("paused", "forged"));
    crate::support::eventually("the forged switch is rejected", || {
        daemon.audit_events().iter().any(|e| {
            e["event_type"] == "cloud_message_rejected" && e["details"]["type"] == "kill_switch"
        })
    });
    assert_eq!(
        daemon.conn().ok("autopilot.status", json!({}))["state"],
        "running"
    );
}

// Policies the cloud offers.

/// A cloud policy that denies every yes/no prompt (so it is easy to see when it decides).
const CLOUD_POLICY: &str = r#"policy_version: "1"
name: cloud-strict
autonomy_mode: full
rules:
  - id: cloud-no
    match:
      prompt_type: [yes_no]
    action:
      type: deny
      reason: the cloud says no
"#;

fn cloud_policy_hash(yaml: &str) -> String {
    atlasbridge_protocol::policy::load_str(yaml, std::path::Path::new("cloud.yaml"))
        .unwrap()
        .hash
}

fn active_hash(daemon: &TestDaemon) -> String {
    daemon.conn().ok("policy.status", json!({}))["policy_hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn audited(daemon: &TestDaemon, event_type: &str) -> Vec<Value> {
    daemon
        .audit_events()
        .into_iter()
        .filter(|e| e["event_type"] == event_type)
        .collect()
}

/// A linked daemon without a local policy file, whose link is up.
fn linked_without_policy(peer: &CloudPeer, extra: &str) -> TestDaemon {
    let daemon = linked_in(Sandbox::new(), peer, extra, "");
    decide(&daemon, "warm", 1);
    assert!(peer.wait_for_entries(Stream::Trace, 1, CATCH_UP));
    daemon
}

#[test]
fn an_offered_policy_waits_for_accept_in_manual_mode_and_stays_after_a_restart() {
    let peer = CloudPeer::start();
    let mut daemon = linked_without_policy(&peer, "");
    let before = active_hash(&daemon);
    let hash = cloud_policy_hash(CLOUD_POLICY);
    peer.push_policy("team", CLOUD_POLICY, &hash, PolicySigning::Good);
    crate::support::eventually("the policy is pending", || {
        daemon.conn().ok("policy.pending", json!({}))["pending"][0]["content_hash"] == hash.as_str()
    });
    crate::support::eventually("the pending policy is audited", || {
        audited(&daemon, "cloud_policy_pending").len() == 1
    });
    assert_eq!(active_hash(&daemon), before, "manual: nothing applied yet");
    let listed = daemon.cli(&["policy", "pending"]);
    listed.assert_code(0);
    assert!(listed.stdout.contains(&hash), "{}", listed.stdout);

    daemon.cli(&["policy", "accept", &hash]).assert_code(0);
    assert_eq!(active_hash(&daemon), hash);
    let answer = daemon
        .conn()
        .ok("decision.evaluate", event("s", "after-accept"));
    assert_eq!(answer["action"], "deny", "{answer}");
    for event_type in [
        "cloud_policy_offered",
        "cloud_policy_pending",
        "cloud_policy_accepted",
    ] {
        assert_eq!(audited(&daemon, event_type).len(), 1, "{event_type}");
    }
    daemon.restart();
    assert_eq!(
        active_hash(&daemon),
        hash,
        "the accepted policy survives a restart"
    );
    assert!(
        daemon.conn().ok("policy.pending", json!({}))["pending"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_offered_policy_applies_at_once_in_auto_mode() {
    let peer = CloudPeer::start();
    let daemon = linked_without_policy(&peer, "policy_sync = \"auto\"\n");
    let hash = cloud_policy_hash(CLOUD_POLICY);
    peer.push_policy("team", CLOUD_POLICY, &hash, PolicySigning::Good);
    crate::support::eventually("the policy is active", || active_hash(&daemon) == hash);
    // The audit event and the status follow the swap.
    crate::support::eventually("the application is audited", || {
        audited(&daemon, "cloud_policy_applied").len() == 1
    });
    let status = daemon.conn().ok("cloud.status", json!({}));
    assert_eq!(status["policy_sync"], "synced", "{status}");
}

#[test]
fn a_policy_published_while_the_link_was_down_is_picked_up_from_the_welcome() {
    let peer = CloudPeer::start();
    let daemon = linked_without_policy(&peer, "policy_sync = \"auto\"\n");
    peer.stop();
    let hash = cloud_policy_hash(CLOUD_POLICY);
    // Nobody is connected: the announcement reaches no one.
    peer.push_policy("team", CLOUD_POLICY, &hash, PolicySigning::Good);
    peer.restart();
    crate::support::eventually("the policy is active", || active_hash(&daemon) == hash);
}

#[test]
fn a_local_policy_file_takes_precedence_over_auto() {
    let peer = CloudPeer::start();
    let daemon = linked(&peer, "policy_sync = \"auto\"\n", "");
    decide(&daemon, "warm", 1);
    assert!(peer.wait_for_entries(Stream::Trace, 1, CATCH_UP));
    let before = active_hash(&daemon);
    let hash = cloud_policy_hash(CLOUD_POLICY);
    peer.push_policy("team", CLOUD_POLICY, &hash, PolicySigning::Good);
    crate::support::eventually("the policy is pending", || {
        !audited(&daemon, "cloud_policy_pending").is_empty()
    });
    let pending = &audited(&daemon, "cloud_policy_pending")[0];
    assert_eq!(
        pending["details"]["reason"],
        "a local [policy] file takes precedence"
    );
    assert_eq!(active_hash(&daemon), before);
    let refused = daemon.cli(&["policy", "accept", &hash]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("takes precedence"),
        "{}",
        refused.stderr
    );
    assert_eq!(active_hash(&daemon), before);
}

#[test]
fn a_badly_signed_or_mismatched_policy_is_rejected_audited_and_changes_nothing() {
    let peer = CloudPeer::start();
    let daemon = linked_without_policy(&peer, "policy_sync = \"auto\"\n");
    let before = active_hash(&daemon);
    let hash = cloud_policy_hash(CLOUD_POLICY);

    peer.push_policy("team", CLOUD_POLICY, &hash, PolicySigning::BadSignature);
    crate::support::eventually("rejected", || {
        audited(&daemon, "cloud_policy_rejected").len() == 1
    });
    let rejected = &audited(&daemon, "cloud_policy_rejected")[0];
    assert!(
        rejected["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("signature does not verify"),
        "{rejected}"
    );

    peer.push_policy("team", CLOUD_POLICY, &hash, PolicySigning::MismatchedHash);
    crate::support::eventually("rejected", || {
        audited(&daemon, "cloud_policy_rejected").len() == 2
    });

    // Well signed, but the YAML is not the policy the hash names.
    let other = CLOUD_POLICY.replace("the cloud says no", "tampered");
    peer.push_policy("team", &other, &hash, PolicySigning::Good);
    crate::support::eventually("rejected", || {
        audited(&daemon, "cloud_policy_rejected").len() == 3
    });
    let tampered = &audited(&daemon, "cloud_policy_rejected")[2];
    assert!(
        tampered["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("not to its content_hash"),
        "{tampered}"
    );

    // Announced in an envelope the server key did not sign: dropped before any fetch.
    peer.push_policy("team", CLOUD_POLICY, &hash, PolicySigning::WrongKeyEnvelope);
    crate::support::eventually("dropped", || {
        audited(&daemon, "cloud_message_rejected")
            .iter()
            .any(|e| e["details"]["type"] == "policy_update_available")
    });
    let invalid = "policy_version: \"1\"\nname: broken\nrules: [\n";
    peer.push_policy("team", invalid, &hash, PolicySigning::Good);
    crate::support::eventually("rejected", || {
        audited(&daemon, "cloud_policy_rejected").len() == 4
    });

    assert_eq!(
        active_hash(&daemon),
        before,
        "the active policy never changed"
    );
    assert!(
        daemon.conn().ok("policy.pending", json!({}))["pending"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let status = daemon.conn().ok("cloud.status", json!({}));
    assert_eq!(status["policy_sync"], "error", "{status}");

    // The next welcome names the last (refused) version: it is not fetched and refused again.
    let connections = peer.connections();
    peer.disconnect();
    assert!(peer.wait_until(|s| s.connections() > connections, CATCH_UP));
    decide(&daemon, "after", 1);
    assert_peer_has_the_trace(&daemon, &peer);
    // An offer handled from the welcome takes milliseconds; give one ample time to show up.
    std::thread::sleep(Duration::from_millis(500));
    let rejected = audited(&daemon, "cloud_policy_rejected");
    assert_eq!(
        rejected.len(),
        4,
        "{:?}",
        rejected.iter().map(|e| &e["details"]).collect::<Vec<_>>()
    );
}

#[test]
fn signed_checkpoints_reach_the_cloud_and_acknowledged_ones_are_not_sent_again() {
    let peer = CloudPeer::start();
    let mut daemon = linked(&peer, "", "[trace]\ncheckpoint_every_entries = 50\n");
    decide(&daemon, "s", 120);
    assert_peer_has_the_trace(&daemon, &peer);
    let checkpoints = daemon.sandbox.data_dir().join("trace/checkpoints.jsonl");
    let local: Vec<u64> = std::fs::read_to_string(&checkpoints)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["checkpoint_seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(local.len() >= 3, "{local:?}");
    let sent = |peer: &CloudPeer| -> Vec<u64> {
        peer.received("checkpoint")
            .iter()
            .map(|c| c["checkpoint_seq"].as_u64().unwrap())
            .collect()
    };
    // Checkpoints go out when the link comes up and with each heartbeat (every second here).
    assert!(peer.wait_until(|s| s.received("checkpoint").len() >= local.len(), CATCH_UP));
    assert_eq!(sent(&peer)[..local.len()], local[..]);

    daemon.stop();
    let cursor: Value = serde_json::from_str(
        &std::fs::read_to_string(daemon.sandbox.data_dir().join("cloud/cursor")).unwrap(),
    )
    .unwrap();
    let acked = cursor["checkpoint"]
        .as_u64()
        .expect("acknowledged checkpoints");
    // Before the restart a checkpoint may have gone out twice (a reconnect forgets what was on
    // its way; the cloud keeps one); what was acknowledged must not go out again after it.
    let sent_before = sent(&peer).len();
    daemon.launch();
    // The final checkpoint written at stop and the first at start follow.
    let total = std::fs::read_to_string(&checkpoints)
        .unwrap()
        .lines()
        .count();
    assert!(peer.wait_until(
        |s| {
            let mut seqs: Vec<u64> = s
                .received("checkpoint")
                .iter()
                .filter_map(|c| c["checkpoint_seq"].as_u64())
                .collect();
            seqs.dedup();
            seqs.len() >= total
        },
        CATCH_UP
    ));
    let sent_after = sent(&peer)[sent_before..].to_vec();
    assert!(
        sent_after.iter().all(|seq| *seq > acked),
        "checkpoints up to {acked} were acknowledged, then sent again: {sent_after:?}"
    );
    for seq in 0..=acked {
        assert!(
            sent(&peer).contains(&seq),
            "checkpoint {seq} never reached the cloud"
        );
    }
}

#[test]
fn sessions_escalations_and_the_loaded_policy_with_its_pins_are_reported() {
    let peer = CloudPeer::start();
    let daemon = linked(&peer, "", "");
    // The policy in force is reported at connect, and again with the pins whenever they change.
    let hash = active_hash(&daemon);
    assert!(peer.wait_until(|s| !s.received("policy_loaded").is_empty(), CATCH_UP));
    daemon.conn().ok(
        "policy.pin",
        json!({"scope": "agent", "id": "pinned-agent", "policy_hash": hash}),
    );
    assert!(peer.wait_until(
        |s| {
            s.received("policy_loaded")
                .iter()
                .any(|p| p["pins"][0]["id"] == "pinned-agent")
        },
        CATCH_UP
    ));
    let loaded = peer.received("policy_loaded").last().cloned().unwrap();
    assert_eq!(loaded["policy_hash"], hash.as_str(), "{loaded}");

    let mut conn = daemon.conn();
    conn.ok(
        "session.start",
        json!({"session_id": "build-1", "agent_id": "ci-bot", "branch": "main"}),
    );
    // A low-confidence prompt is not answered automatically: a person decides.
    let mut asked = event("build-1", "p-low");
    asked["confidence"] = json!("low");
    asked["prompt_text"] = json!("secret prompt text");
    let answer = conn.ok("decision.evaluate", asked);
    assert_eq!(answer["action"], "require_human", "{answer}");
    conn.ok("session.end", json!({"session_id": "build-1"}));

    assert!(peer.wait_until(|s| !s.received("session_ended").is_empty(), CATCH_UP));
    let started = &peer.received("session_started")[0];
    assert_eq!(started["session_id"], "build-1", "{started}");
    assert_eq!(started["agent_id"], "ci-bot", "{started}");
    let escalated = &peer.received("escalation_triggered")[0];
    assert_eq!(escalated["prompt_id"], "p-low", "{escalated}");
    assert_eq!(escalated["seq"], answer["seq"], "{escalated}");
    assert!(
        !escalated.to_string().contains("secret prompt text"),
        "prompt text never leaves the machine: {escalated}"
    );
    assert_eq!(peer.received("session_ended")[0]["decisions"], 1);
}

#[test]
fn cloud_policy_push_pull_and_diff_go_through_the_daemons_link() {
    let peer = CloudPeer::start();
    let daemon = linked(&peer, "", "");
    decide(&daemon, "warm", 1);
    assert!(peer.wait_for_entries(Stream::Trace, 1, CATCH_UP));
    let file = daemon.sandbox.write("team.yaml", CLOUD_POLICY);
    let file = file.to_str().unwrap();

    let pushed = daemon.cli(&["--json", "cloud", "policy", "push", file]);
    pushed.assert_code(0);
    let pushed = pushed.json();
    assert_eq!(pushed["name"], "cloud-strict", "{pushed}");
    assert_eq!(
        pushed["content_hash"],
        cloud_policy_hash(CLOUD_POLICY).as_str()
    );
    let uploads = peer.with_state(|s| s.uploads().to_vec());
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].yaml, CLOUD_POLICY);

    let pulled = daemon.cli(&["cloud", "policy", "pull", "cloud-strict"]);
    pulled.assert_code(0);
    assert_eq!(pulled.stdout, CLOUD_POLICY);
    daemon
        .cli(&["cloud", "policy", "diff", "cloud-strict", file])
        .assert_code(0);
    let changed = daemon.sandbox.write(
        "changed.yaml",
        &CLOUD_POLICY.replace("[yes_no]", "[yes_no, confirm_enter]"),
    );
    let diff = daemon.cli(&[
        "cloud",
        "policy",
        "diff",
        "cloud-strict",
        changed.to_str().unwrap(),
    ]);
    diff.assert_code(1);
    assert!(
        diff.stdout.contains("cloud-no"),
        "{} {}",
        diff.stdout,
        diff.stderr
    );

    // A version whose signature does not verify is refused, not printed.
    peer.push_policy(
        "cloud-strict",
        CLOUD_POLICY,
        &cloud_policy_hash(CLOUD_POLICY),
        PolicySigning::BadSignature,
    );
    let refused = daemon.cli(&["cloud", "policy", "pull", "cloud-strict"]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("signature does not verify"),
        "{}",
        refused.stderr
    );

    // Without the uplink there is no registry to reach.
    let offline = with_policy("enterprise", POLICY, "");
    let refused = offline.cli(&["cloud", "policy", "pull", "cloud-strict"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("uplink is not running"),
        "{}",
        refused.stderr
    );
}

#[cfg(unix)]
#[test]
fn cloud_setup_tests_the_values_writes_a_private_config_and_never_shows_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let peer = CloudPeer::start();
    let daemon = with_policy("enterprise", POLICY, "");
    let config = daemon.sandbox.path("setup/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "# my settings\n[trace]\ndurability = \"batch\"\n").unwrap();
    let ws_url = peer.ws_url();
    let server_key = peer.server_public_key();
    let key = peer.api_key();
    let args = [
        "cloud",
        "setup",
        "--endpoint",
        ws_url.as_str(),
        "--org-id",
        "org-test",
        "--api-key-stdin",
        "--server-public-key",
        server_key.as_str(),
        "--config",
        config.to_str().unwrap(),
    ];

    // A wrong key: the test through the daemon fails at the token call; nothing is written.
    let refused = daemon.cli_with_stdin(&args, &[], Some("not-the-key\n"));
    refused.assert_code(1);
    assert!(refused.stderr.contains("token stage"), "{}", refused.stderr);
    assert!(!daemon.sandbox.path("setup/cloud-api-key").exists());

    let done = daemon.cli_with_stdin(&args, &[], Some(&format!("{key}\n")));
    done.assert_code(0);
    assert!(done.stdout.contains("tested: ok"), "{}", done.stdout);
    for output in [&done.stdout, &done.stderr, &refused.stdout, &refused.stderr] {
        assert!(!output.contains(&key), "the key was shown: {output}");
    }
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let key_file = daemon.sandbox.path("setup/cloud-api-key");
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key);
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.starts_with("# my settings\n[trace]\ndurability = \"batch\"\n"),
        "{written}"
    );
    assert!(!written.contains(&key), "{written}");

    // The written config is one a daemon starts with, and links.
    let sandbox = Sandbox::new();
    let policy = sandbox.write("policy.yaml", POLICY);
    let full = format!("{written}\n[policy]\nfile = \"{}\"\n", policy.display());
    let linked = TestDaemon::start_in(
        sandbox,
        Options::default().edition("enterprise").config(&full),
    );
    decide(&linked, "s", 3);
    assert_peer_has_the_trace(&linked, &peer);
}

#[test]
fn throttled_upgrades_lose_nothing() {
    let (_daemon, peer) = survives(
        |peer| {
            peer.throttle_upgrades(Some(Throttle::new(503, 1, 2)));
            peer.disconnect();
        },
        "",
    );
    assert!(
        peer.upgrade_attempts().len() >= 3,
        "{:?}",
        peer.upgrade_attempts()
    );
}

#[test]
fn a_policy_pushed_while_agents_decide_loses_nothing() {
    let (daemon, _peer) = survives(
        |peer| {
            peer.push_policy(
                "team",
                CLOUD_POLICY,
                &cloud_policy_hash(CLOUD_POLICY),
                PolicySigning::Good,
            );
        },
        "",
    );
    crate::support::eventually("the offer is handled", || {
        !audited(&daemon, "cloud_policy_pending").is_empty()
    });
}
