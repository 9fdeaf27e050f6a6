//! Many clients at once, and clients that misbehave, without disturbing the others.

use std::io::Write;

use serde_json::json;

use crate::support::{Conn, Options, TestDaemon};

#[test]
fn a_hundred_concurrent_clients_are_all_served() {
    let daemon = TestDaemon::start();
    let socket = daemon.socket();
    let workers: Vec<_> = (0..100)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(&socket).unwrap();
                let hello = conn.ok(
                    "hello",
                    json!({"protocol": 1, "client": format!("worker-{i}")}),
                );
                assert_eq!(hello["protocol"], 1);
                for _ in 0..20 {
                    let status = conn.ok("daemon.status", json!({}));
                    assert!(status["connections"].as_u64().unwrap() >= 1);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a client failed");
    }
    assert!(
        daemon.log().lines().all(|l| !l.contains("ERROR")),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_client_that_never_reads_does_not_block_others_and_is_eventually_dropped() {
    let daemon =
        TestDaemon::start_with(Options::default().config("[daemon]\nwrite_timeout_s = 1\n"));
    let hog = daemon.conn();
    let hog_stream = hog.stream().try_clone().unwrap();
    // Far more replies than the socket buffers and the daemon's bounded queue can hold.
    let writer = std::thread::spawn(move || {
        let line = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"features.list\"}\n".repeat(1000);
        let mut stream = &hog_stream;
        for _ in 0..100 {
            if stream.write_all(&line).is_err() {
                return true;
            }
        }
        false
    });

    let mut other = daemon.conn();
    for _ in 0..50 {
        other.ok("daemon.status", json!({}));
    }
    let mut late = daemon.conn();
    late.ok("features.list", json!({}));

    // Once the daemon gives up on it, the hog's writes fail (or complete into a closed socket).
    let _ = writer.join().unwrap();
    crate::support::eventually("the daemon logs dropping the client", || {
        daemon
            .log()
            .contains("client stopped reading; closing connection")
    });
    other.ok("daemon.status", json!({}));
    drop(hog);
}

#[test]
fn connections_beyond_the_limit_get_32005() {
    let daemon =
        TestDaemon::start_with(Options::default().config("[daemon]\nmax_connections = 3\n"));
    // The readiness probe's connection may still hold a slot for a moment after it closed, so
    // take the three slots one answered connection at a time.
    let mut held: Vec<Conn> = Vec::new();
    crate::support::eventually("three connections are served", || {
        let mut conn = daemon.conn();
        if matches!(conn.try_call("daemon.status", json!({})), Ok(Ok(_))) {
            held.push(conn);
        }
        held.len() == 3
    });
    let mut extra = daemon.conn();
    let reply = extra.read();
    assert_eq!(reply["error"]["code"], -32005, "{reply}");
    assert_eq!(extra.try_read(), None);
    drop(held.pop());
    crate::support::eventually("a slot frees up", || {
        Conn::open(&daemon.socket())
            .and_then(|mut conn| conn.try_call("daemon.status", json!({})))
            .is_ok_and(|answer| answer.is_ok())
    });
}

#[test]
fn an_idle_connection_is_closed_after_the_timeout() {
    let daemon =
        TestDaemon::start_with(Options::default().config("[daemon]\nidle_timeout_s = 1\n"));
    let mut conn = daemon.conn();
    conn.ok("daemon.status", json!({}));
    assert_eq!(conn.try_read(), None, "closed by the daemon when idle");
    daemon.conn().ok("daemon.status", json!({}));
}
