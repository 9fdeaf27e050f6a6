//! `/metrics` after real traffic: token calls (one shed with 429), a control channel, batches
//! that are stored, resent and tampered with, a refused head, and a 503 for one connection too
//! many. Each counter must have moved by exactly what was sent.

use atlasbridge_protocol::cloud::messages::Stream;
use serde_json::json;

use crate::support::runtime::{FakeRuntime, chain, head_of, identity, open, token_response};
use crate::support::{DEADLINE, ServerOptions, TestDb, TestServer, eventually};

/// The `/metrics` page of `server`, checked to be OpenMetrics text.
pub async fn scrape(server: &TestServer) -> String {
    let response = reqwest::Client::new()
        .get(server.http_url("/metrics"))
        .timeout(DEADLINE)
        .send()
        .await
        .expect("/metrics answers");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.expect("the page")
}

/// The value of the sample named `series` (name and labels, as printed), 0 when absent.
pub fn value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.starts_with(' ')
                .then(|| rest.trim().parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_real_traffic_and_the_pool_is_reported() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let server = TestServer::start(
        &db,
        ServerOptions {
            max_connections: 1,
            token_requests_per_minute: 2,
            pool_size: 3,
            ..ServerOptions::default()
        },
    );
    let key = server.org_with_key("org-a");
    let before = scrape(&server).await;
    assert_eq!(value(&before, "atlasbridge_tokens_issued_total"), 0.0);
    assert_eq!(value(&before, "atlasbridge_db_pool_max_size"), 3.0);

    // One token for the runtime (its connect), then one more allowed and one shed with 429.
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let runtime_id = runtime.runtime_id.clone();
    assert_eq!(
        token_response(&server, "org-a", &key, &runtime_id)
            .await
            .status(),
        200
    );
    assert_eq!(
        token_response(&server, "org-a", &key, &runtime_id)
            .await
            .status(),
        429
    );
    // Another runtime's upgrade is one connection too many: 503.
    let other = identity();
    let other_id =
        atlasbridge_protocol::trace::checkpoint::encode_public_key(&other.verifying_key());
    let response = token_response(&server, "org-a", &key, &other_id).await;
    let other_token: atlasbridge_protocol::cloud::rest::TokenResponse =
        response.json().await.expect("a token");
    let refused = open(&server, &other_token.access_token)
        .await
        .expect_err("over max_connections");
    assert_eq!(refused.status, 503);

    // Ten entries in two batches, five of them sent again, and a batch that is not one.
    let entries = chain(10);
    runtime.send_batch(Stream::Trace, &entries[..5]).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 4);
    runtime.send_batch(Stream::Trace, &entries).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 9);
    runtime
        .send(
            atlasbridge_protocol::cloud::messages::kind::AUDIT_BATCH,
            json!({"not": "a batch"}),
        )
        .await;
    assert_eq!(runtime.error().await.0, "BAD_PAYLOAD");
    // A tampered entry flags the audit chain; a head going backwards is refused.
    let mut audit = chain(3);
    audit[1]["action_taken"] = json!("deny");
    runtime.send_batch(Stream::Audit, &audit).await;
    assert_eq!(runtime.ack_through(Stream::Audit).await, 2);
    runtime.send_heartbeat(Some(head_of(&entries[..4]))).await;
    assert_eq!(runtime.error().await.0, "HEAD_REFUSED");

    let page = scrape(&server).await;
    assert_eq!(
        value(&page, "atlasbridge_tokens_issued_total"),
        3.0,
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "atlasbridge_http_requests_total{method=\"POST\",route=\"/v1/auth/token\",status=\"200\"}"
        ),
        3.0
    );
    assert_eq!(
        value(&page, "atlasbridge_load_shed_total{status=\"429\"}"),
        1.0
    );
    assert_eq!(
        value(&page, "atlasbridge_load_shed_total{status=\"503\"}"),
        1.0
    );
    assert_eq!(
        value(
            &page,
            "atlasbridge_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/auth/token\"}"
        ),
        4.0
    );
    assert_eq!(value(&page, "atlasbridge_runtime_channels_open"), 1.0);
    assert_eq!(
        value(
            &page,
            "atlasbridge_entries_ingested_total{stream=\"trace\"}"
        ),
        10.0,
        "resent entries are not counted again"
    );
    assert_eq!(
        value(
            &page,
            "atlasbridge_batches_total{stream=\"trace\",outcome=\"acked\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &page,
            "atlasbridge_batches_total{stream=\"unknown\",outcome=\"rejected\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &page,
            "atlasbridge_chain_flags_total{stream=\"audit\",kind=\"hash_mismatch\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &page,
            "atlasbridge_chain_flags_total{stream=\"trace\",kind=\"rewound\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&page, "atlasbridge_witness_refusals_total{what=\"head\"}"),
        1.0
    );
    // The pool opened connections for that work and none is waiting now.
    assert!(value(&page, "atlasbridge_db_pool_size") >= 1.0, "{page}");
    assert_eq!(value(&page, "atlasbridge_db_pool_waiters"), 0.0);

    // A closed channel leaves the gauge.
    drop(runtime);
    eventually("the closed channel leaves the gauge", || {
        let server = &server;
        async move { value(&scrape(server).await, "atlasbridge_runtime_channels_open") == 0.0 }
    })
    .await;
}
