//! Raw lines on the socket: what a client written from the spec alone sees.

use serde_json::json;

use crate::support::TestDaemon;

#[test]
fn a_garbage_line_gets_a_parse_error_with_a_null_id_and_the_connection_lives_on() {
    let daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    conn.send_raw(b"{nope\n");
    let reply = conn.read();
    assert_eq!(reply["error"]["code"], -32700);
    assert_eq!(reply["id"], json!(null));
    conn.send_raw(b"\xff\xfe not utf-8\n");
    assert_eq!(conn.read()["error"]["code"], -32700);
    conn.ok("daemon.status", json!({}));
}

#[test]
fn a_line_over_one_mebibyte_gets_32006_and_a_close_while_others_are_served() {
    let daemon = TestDaemon::start();
    let mut bystander = daemon.conn();
    let mut conn = daemon.conn();
    let mut line = br#"{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":{"x":""#.to_vec();
    line.extend(std::iter::repeat_n(b'a', 2 << 20));
    line.extend_from_slice(b"\"}}\n");
    // The daemon may close while we are still writing; that is allowed.
    let _ = std::io::Write::write_all(&mut conn.stream(), &line);
    let reply = conn.read();
    assert_eq!(reply["error"]["code"], -32006, "{reply}");
    assert_eq!(reply["id"], json!(null));
    assert_eq!(conn.try_read(), None, "connection closed after -32006");
    bystander.ok("daemon.status", json!({}));
    daemon.conn().ok("daemon.status", json!({}));
}

#[test]
fn a_line_of_exactly_one_mebibyte_is_accepted() {
    let daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    let head = br#"{"jsonrpc":"2.0","id":9,"method":"hello","params":{"protocol":1,"client":""#;
    let tail = br#""}}"#;
    let mut line = head.to_vec();
    line.extend(std::iter::repeat_n(
        b'c',
        (1 << 20) - head.len() - tail.len(),
    ));
    line.extend_from_slice(tail);
    assert_eq!(line.len(), 1 << 20);
    line.push(b'\n');
    conn.send_raw(&line);
    let reply = conn.read();
    assert_eq!(reply["id"], 9, "{reply}");
    assert_eq!(reply["result"]["protocol"], 1);
}

#[test]
fn an_unknown_method_gets_32601_and_the_connection_keeps_working() {
    let daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    let error = conn.err("nope.nope", json!({}));
    assert_eq!(error["code"], -32601);
    assert_eq!(error["message"], "unknown method 'nope.nope'");
    conn.ok("daemon.status", json!({}));
}

#[test]
fn a_batch_array_gets_32600() {
    let daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    conn.send_raw(br#"[{"jsonrpc":"2.0","id":1,"method":"daemon.status"}]"#);
    conn.send_raw(b"\n");
    let reply = conn.read();
    assert_eq!(reply["error"]["code"], -32600);
    assert_eq!(reply["id"], json!(null));
}

#[test]
fn invalid_requests_keep_their_id() {
    let daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    conn.send_raw(b"{\"jsonrpc\":\"1.0\",\"id\":\"x\",\"method\":\"daemon.status\"}\n");
    let reply = conn.read();
    assert_eq!(
        (reply["id"].clone(), reply["error"]["code"].clone()),
        (json!("x"), json!(-32600))
    );
}

#[test]
fn a_notification_gets_no_response() {
    let daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    conn.send_raw(b"{\"jsonrpc\":\"2.0\",\"method\":\"daemon.status\"}\n{\"jsonrpc\":\"2.0\",\"method\":\"no.such\"}\n");
    conn.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"daemon.status\"}\n");
    assert_eq!(
        conn.read()["id"],
        7,
        "the first reply is the one to the request with an id"
    );
}

#[test]
fn blank_lines_and_crlf_are_tolerated() {
    let daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    conn.send_raw(b"\n  \r\n{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"daemon.status\"}\r\n");
    assert_eq!(conn.read()["id"], 3);
}

#[test]
fn many_requests_in_flight_on_one_connection_all_come_back() {
    let daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    let mut batch = Vec::new();
    for id in 0..500 {
        let method = if id % 2 == 0 {
            "daemon.status"
        } else {
            "features.list"
        };
        batch
            .extend(serde_json::to_vec(&json!({"jsonrpc":"2.0","id":id,"method":method})).unwrap());
        batch.push(b'\n');
    }
    conn.send_raw(&batch);
    let mut seen: Vec<u64> = (0..500)
        .map(|_| conn.read()["id"].as_u64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..500).collect::<Vec<_>>());
}

#[test]
fn hello_negotiates_protocol_1_and_refuses_other_majors() {
    let daemon = TestDaemon::start_with(crate::support::Options::default().edition("pro"));
    let mut conn = daemon.conn();
    let hello = conn.ok("hello", json!({"protocol": 1, "client": "e2e/1"}));
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["edition"], "pro");
    assert_eq!(hello["role"], "owner");
    assert_eq!(hello["features"]["policy_pinning"], true);
    assert!(
        hello["daemon"]
            .as_str()
            .unwrap()
            .starts_with("atlasbridged ")
    );
    let error = conn.err("hello", json!({"protocol": 99}));
    assert_eq!(error["code"], -32010);
    assert_eq!(error["data"]["supported"], json!([1]));
}

#[test]
fn bad_params_name_the_field() {
    let daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    let error = conn.err("hello", json!({"protocol": "one"}));
    assert_eq!(error["code"], -32602);
    assert_eq!(error["data"]["field"], "protocol");
    let error = conn.err("daemon.status", json!({"verbose": true}));
    assert_eq!(error["data"]["field"], "verbose");
}

#[test]
fn the_socket_is_0600_in_a_0700_directory() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = TestDaemon::start();
    let socket_mode = std::fs::metadata(daemon.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(socket_mode, 0o600);
    let dir_mode = std::fs::metadata(daemon.socket().parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
}
