//! `atlasbridge trace integrity-check --against-cloud` and `audit verify --against-cloud` against
//! the test peer: the CLI asks the real daemon (`cloud.witness`), which asks the peer's
//! `POST /v1/witness` with its uplink's token; the peer's copy is then made to hold less, and to
//! fork, and each outcome has its exit status.
use atlasbridge_e2e::cloud_peer::{CloudPeer, Refusal};
use atlasbridge_protocol::cloud::messages::Stream;

use crate::cloud::{CATCH_UP, POLICY, decide, linked, local_chain};
use crate::support::with_policy;

const AGAINST_CLOUD: [&str; 4] = ["--json", "trace", "integrity-check", "--against-cloud"];

#[test]
fn the_cli_agrees_with_the_peer_then_names_where_it_holds_less_and_where_it_forks() {
    let peer = CloudPeer::start();
    let daemon = linked(&peer, "", "");
    decide(&daemon, "s1", 300);
    assert!(peer.wait_for_entries(Stream::Trace, 300, CATCH_UP));

    let before = peer.witness_queries();
    let agrees = daemon.cli(&AGAINST_CLOUD);
    agrees.assert_code(0);
    let report = agrees.json();
    let cloud = &report["against_cloud"];
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(cloud["outcome"], "agrees", "{cloud}");
    assert_eq!(cloud["agrees_through"], 299);
    assert_eq!(cloud["local_head"], 299);
    assert_eq!(cloud["requests"], 1);
    assert_eq!(
        peer.witness_queries() - before,
        1,
        "one request, as reported"
    );
    let text = daemon.cli(&["trace", "integrity-check", "--against-cloud"]);
    text.assert_code(0);
    assert!(
        text.stdout
            .contains("trace agrees with what the server witnessed through seq 299"),
        "{}",
        text.stdout
    );

    // The link goes down and the trace grows: the peer holds nothing past seq 299.
    peer.refuse(Some(Refusal::ServiceUnavailable));
    peer.disconnect();
    assert!(peer.wait_until(|s| !s.is_connected(), CATCH_UP));
    decide(&daemon, "s2", 20);
    let behind = daemon.cli(&AGAINST_CLOUD);
    behind.assert_code(4);
    let cloud = &behind.json()["against_cloud"];
    assert_eq!(cloud["outcome"], "server_behind", "{cloud}");
    assert_eq!(cloud["agrees_through"], 299);
    assert_eq!(cloud["local_head"], 319);
    let text = daemon.cli(&["trace", "integrity-check", "--against-cloud"]);
    text.assert_code(4);
    assert!(
        text.stdout
            .contains("the server holds nothing past seq 299"),
        "{}",
        text.stdout
    );

    // The peer's copy is rewritten from seq 123: the CLI names that seq, both hashes and where
    // the peer's came from, in a few requests.
    let local = local_chain(&daemon, Stream::Trace);
    peer.rewrite_stored_from(Stream::Trace, 123);
    let before = peer.witness_queries();
    let forked = daemon.cli(&AGAINST_CLOUD);
    forked.assert_code(1);
    let report = forked.json();
    let cloud = &report["against_cloud"];
    assert_eq!(report["valid"], true, "the local trace itself is sound");
    assert_eq!(cloud["outcome"], "fork", "{cloud}");
    assert_eq!(cloud["fork"]["seq"], 123);
    assert_eq!(cloud["agrees_through"], 122);
    assert_eq!(cloud["fork"]["local_hash"], local[123].1.as_str());
    assert_eq!(cloud["fork"]["source"], "entry");
    let stored = &peer.entries(Stream::Trace)[123];
    assert_eq!(cloud["fork"]["server_hash"], stored["entry_hash"]);
    let requests = cloud["requests"].as_u64().unwrap();
    assert!(
        requests <= 4,
        "300 entries take at most 4 requests, not {requests}"
    );
    assert_eq!((peer.witness_queries() - before) as u64, requests);
    let text = daemon.cli(&["trace", "integrity-check", "--against-cloud"]);
    text.assert_code(1);
    assert!(
        text.stdout
            .contains("trace FORKS from what the server witnessed at seq 123")
            && text.stdout.contains("agrees through seq 122"),
        "{}",
        text.stdout
    );
}

#[test]
fn without_the_uplink_the_comparison_is_refused_with_exit_3() {
    let daemon = with_policy("enterprise", POLICY, "");
    let refused = daemon.cli(&["trace", "integrity-check", "--against-cloud"]);
    refused.assert_code(3);
    assert!(
        refused.stderr.contains("uplink is not running"),
        "{}",
        refused.stderr
    );
}

#[test]
fn the_audit_log_is_compared_the_same_way() {
    const AUDIT_AGAINST_CLOUD: [&str; 4] = ["--json", "audit", "verify", "--against-cloud"];
    let peer = CloudPeer::start();
    let daemon = linked(&peer, "", "");
    decide(&daemon, "s1", 5);
    // The daemon's own events (start, policy, uplink) stream like decisions do.
    let local = local_chain(&daemon, Stream::Audit);
    assert!(local.len() >= 2, "too few audit events to fork: {local:?}");
    assert!(peer.wait_for_entries(Stream::Audit, local.len(), CATCH_UP));
    let head = local.len() as u64 - 1;

    let agrees = daemon.cli(&AUDIT_AGAINST_CLOUD);
    agrees.assert_code(0);
    let cloud = &agrees.json()["against_cloud"];
    assert_eq!(cloud["outcome"], "agrees", "{cloud}");
    assert_eq!(cloud["agrees_through"], head);
    let text = daemon.cli(&["audit", "verify", "--against-cloud"]);
    text.assert_code(0);
    assert!(
        text.stdout.contains(&format!(
            "audit log agrees with what the server witnessed through seq {head}"
        )),
        "{}",
        text.stdout
    );

    peer.rewrite_stored_from(Stream::Audit, 1);
    let forked = daemon.cli(&AUDIT_AGAINST_CLOUD);
    forked.assert_code(1);
    let cloud = &forked.json()["against_cloud"];
    assert_eq!(cloud["outcome"], "fork", "{cloud}");
    assert_eq!(cloud["fork"]["seq"], 1);
    assert_eq!(cloud["fork"]["local_hash"], local[1].1.as_str());
    // The trace was not touched: it still agrees.
    daemon.cli(&AGAINST_CLOUD).assert_code(0);
}
