//! The decision search on the generated fleet: `GET /v1/decisions` with each filter the API
//! offers, and cursor walks, over HTTP against the release server as a logged-in person; then
//! the same searches in PostgreSQL alone (`store::search::search_decisions` in an org-scoped
//! transaction, as the app role): the baseline, so the difference is what the API adds.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use atlasbridge_server::store::search::{self, DecisionFilter, EntryCursor};
use serde_json::Value;
use tokio_postgres::Client;

use crate::cluster::{self, Database, Server};
use crate::dataset::{END_US, Fleet, ORG, SPAN_US};
use crate::entries::{self, AGENTS, Mix};
use crate::stats::percentile;

/// Searches run before the measured ones of each kind (caches, plans, hint bits).
const WARM_UP: usize = 5;
/// Pages of a cursor walk.
const WALK_PAGES: usize = 10;
/// Rows a page holds (the API's default).
const PAGE: usize = 100;

/// One search of a kind: its query parameters and the same filter for the store.
struct Search {
    params: Vec<(&'static str, String)>,
    filter: DecisionFilter,
}

/// What one kind of search measured.
pub(crate) struct Measured {
    pub name: &'static str,
    /// Pages per search (1, or [`WALK_PAGES`] for a walk).
    pub pages: usize,
    pub http: Vec<Duration>,
    pub sql: Vec<Duration>,
    /// Rows per page, on average.
    pub rows: f64,
    /// The indexes the PostgreSQL searches of this kind scanned.
    pub indexes: Vec<String>,
}

type Draw = fn(&Fleet, &mut Mix) -> Search;

/// Every kind: a name and how to draw one search of it.
fn kinds() -> Vec<(&'static str, usize, Draw)> {
    vec![
        ("newest first, no filter", 1, |_, _| {
            search(Vec::new(), DecisionFilter::default())
        }),
        ("one runtime", 1, |fleet, mix| {
            let id = runtime(fleet, mix);
            search(
                vec![("runtime_id", id.clone())],
                DecisionFilter {
                    runtime_id: Some(id),
                    ..DecisionFilter::default()
                },
            )
        }),
        ("one session", 1, |fleet, mix| {
            let r = mix.below(fleet.runtime_ids.len() as u64) as usize;
            let id = fleet.session_id(r, mix.below(fleet.sessions()));
            search(
                vec![("session_id", id.clone())],
                DecisionFilter {
                    session_id: Some(id),
                    ..DecisionFilter::default()
                },
            )
        }),
        ("one agent", 1, |fleet, mix| {
            // An agent some runtime serves: runtime r serves agents 3r, 3r+1, 3r+2 (mod 50).
            let r = mix.below(fleet.runtime_ids.len() as u64) as usize;
            let id = entries::agent_name((r * 3 + mix.below(3) as usize) % AGENTS);
            search(
                vec![("agent_id", id.clone())],
                DecisionFilter {
                    agent_id: Some(id),
                    ..DecisionFilter::default()
                },
            )
        }),
        // Common values have no index of their own (migration 0005): the time index, filtered.
        ("action = auto_reply (70 %)", 1, |_, _| {
            actions(&["auto_reply"])
        }),
        ("action = deny (5 %)", 1, |_, _| actions(&["deny"])),
        ("action = require_human,deny (20 %)", 1, |_, _| {
            actions(&["require_human", "deny"])
        }),
        ("risk = low (30 %)", 1, |_, _| risks(&["low"], None)),
        ("risk = critical (2 %)", 1, |_, _| {
            risks(&["critical"], None)
        }),
        ("risk = high,critical (10 %)", 1, |_, _| {
            risks(&["high", "critical"], None)
        }),
        ("one hour (from, to)", 1, |_, mix| {
            let hour = 3_600_000_000;
            let from = END_US - SPAN_US + mix.below((SPAN_US - hour) as u64) as i64;
            let (from, to) = (time(from), time(from + hour));
            search(
                vec![("from", rfc3339(from)), ("to", rfc3339(to))],
                DecisionFilter {
                    from: Some(from),
                    to: Some(to),
                    ..DecisionFilter::default()
                },
            )
        }),
        (
            "one runtime, risk = high,critical, last 7 days",
            1,
            |fleet, mix| {
                let id = runtime(fleet, mix);
                let from = time(END_US - 7 * 24 * 3_600_000_000);
                let mut found = risks(&["high", "critical"], Some(from));
                found.params.push(("runtime_id", id.clone()));
                found.filter.runtime_id = Some(id);
                found
            },
        ),
        ("cursor walk, no filter", WALK_PAGES, |_, mix| {
            // From a random point, so walks do not all read the same pages.
            let to = time(END_US - mix.below(SPAN_US as u64 / 2) as i64);
            search(
                vec![("to", rfc3339(to))],
                DecisionFilter {
                    to: Some(to),
                    ..DecisionFilter::default()
                },
            )
        }),
        ("cursor walk, risk = high,critical", WALK_PAGES, |_, mix| {
            let to = time(END_US - mix.below(SPAN_US as u64 / 2) as i64);
            let mut found = risks(&["high", "critical"], None);
            found.params.push(("to", rfc3339(to)));
            found.filter.to = Some(to);
            found
        }),
    ]
}

fn search(params: Vec<(&'static str, String)>, filter: DecisionFilter) -> Search {
    Search { params, filter }
}

fn runtime(fleet: &Fleet, mix: &mut Mix) -> String {
    fleet.runtime_ids[mix.below(fleet.runtime_ids.len() as u64) as usize].clone()
}

fn actions(values: &[&str]) -> Search {
    search(
        vec![("action", values.join(","))],
        DecisionFilter {
            actions: values.iter().map(|v| (*v).to_owned()).collect(),
            ..DecisionFilter::default()
        },
    )
}

fn risks(values: &[&str], from: Option<SystemTime>) -> Search {
    let mut params = vec![("risk", values.join(","))];
    if let Some(from) = from {
        params.push(("from", rfc3339(from)));
    }
    search(
        params,
        DecisionFilter {
            risks: values.iter().map(|v| (*v).to_owned()).collect(),
            from,
            ..DecisionFilter::default()
        },
    )
}

fn time(unix_us: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(unix_us.max(0) as u64)
}

fn rfc3339(time: SystemTime) -> String {
    let us = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    entries::rfc3339(us)
}

/// Logs a viewer in and measures every kind, `samples` searches each (walks: `samples / 10`
/// walks of [`WALK_PAGES`] pages).
pub(crate) async fn run(
    server: &Server,
    db: &Database,
    fleet: &Fleet,
    samples: usize,
) -> Vec<Measured> {
    let password = "bench-password-0123456789";
    server.run(
        &[
            "create-user",
            "--org",
            ORG,
            "--email",
            "bench@example.com",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
    let http = reqwest::Client::new();
    let login: Value = http
        .post(server.http_url("/v1/auth/login"))
        .json(
            &serde_json::json!({"org_id": ORG, "email": "bench@example.com", "password": password}),
        )
        .send()
        .await
        .expect("login answered")
        .error_for_status()
        .expect("logged in")
        .json()
        .await
        .expect("a login answer");
    let token = login["session_token"]
        .as_str()
        .expect("a session token")
        .to_owned();
    let mut sql = cluster::connect(&db.app_url).await;
    let mut mix = Mix::new(0x5EA2C4);
    let mut measured = Vec::new();
    for (name, pages, draw) in kinds() {
        eprintln!("bench-server: searching: {name}");
        let count = if pages == 1 {
            samples
        } else {
            (samples / 10).max(3)
        };
        let searches: Vec<Search> = (0..WARM_UP + count)
            .map(|_| draw(fleet, &mut mix))
            .collect();
        let mut http_times = Vec::new();
        let mut sql_times = Vec::new();
        let mut rows = 0usize;
        let mut indexes = Vec::new();
        for (n, found) in searches.iter().enumerate() {
            let (times, got) = over_http(&http, server, &token, found, pages).await;
            let (sql_page_times, sql_got, scanned) = in_postgres(&mut sql, found, pages).await;
            assert_eq!(
                got, sql_got,
                "{name}: the API and the store found different rows"
            );
            for index in scanned {
                if !indexes.contains(&index) {
                    indexes.push(index);
                }
            }
            if n >= WARM_UP {
                http_times.extend(times);
                sql_times.extend(sql_page_times);
                rows += got;
            }
        }
        http_times.sort_unstable();
        sql_times.sort_unstable();
        measured.push(Measured {
            name,
            pages,
            rows: rows as f64 / http_times.len().max(1) as f64,
            http: http_times,
            sql: sql_times,
            indexes,
        });
    }
    measured
}

/// One search over HTTP, following `next_cursor` for `pages` pages: each page's time (request
/// sent to body read) and the rows found.
async fn over_http(
    http: &reqwest::Client,
    server: &Server,
    token: &str,
    found: &Search,
    pages: usize,
) -> (Vec<Duration>, usize) {
    let mut times = Vec::with_capacity(pages);
    let mut rows = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..pages {
        let mut params = found.params.clone();
        if let Some(cursor) = cursor.take() {
            params.push(("cursor", cursor));
        }
        let mut url = url::Url::parse(&server.http_url("/v1/decisions")).expect("a URL");
        url.query_pairs_mut().extend_pairs(&params);
        let started = Instant::now();
        let body = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("the search is answered")
            .error_for_status()
            .expect("the search succeeds")
            .bytes()
            .await
            .expect("the page");
        times.push(started.elapsed());
        let page: Value = serde_json::from_slice(&body).expect("a JSON page");
        rows += page["decisions"].as_array().map_or(0, Vec::len);
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    (times, rows)
}

/// The same search in PostgreSQL alone: each page's `search_decisions` call, timed inside its
/// org-scoped transaction; and the indexes those transactions scanned (PostgreSQL counts them
/// per backend until they are reported: `pg_stat_get_xact_numscans`, read around the statement
/// outside the clock).
async fn in_postgres(
    client: &mut Client,
    found: &Search,
    pages: usize,
) -> (Vec<Duration>, usize, Vec<String>) {
    let mut times = Vec::with_capacity(pages);
    let mut rows = 0;
    let mut scanned = Vec::new();
    let mut cursor: Option<EntryCursor> = None;
    for _ in 0..pages {
        let tx = client.transaction().await.expect("begin");
        tx.execute("SELECT set_config('atlasbridge.org_id', $1, true)", &[&ORG])
            .await
            .expect("scope");
        let before = index_scans(&tx).await;
        let started = Instant::now();
        let page = search::search_decisions(&tx, &found.filter, cursor.as_ref(), PAGE)
            .await
            .expect("search");
        times.push(started.elapsed());
        for (index, count) in index_scans(&tx).await {
            if count > before.get(&index).copied().unwrap_or(0) && !scanned.contains(&index) {
                scanned.push(index);
            }
        }
        tx.commit().await.expect("commit");
        rows += page.entries.len();
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    (times, rows, scanned)
}

/// This backend's index scans of `entries` not yet reported to the statistics system, per
/// index: their growth across a statement says which indexes it read.
async fn index_scans(tx: &tokio_postgres::Transaction<'_>) -> HashMap<String, i64> {
    tx.query(
        "SELECT indexrelid::regclass::text, pg_stat_get_xact_numscans(indexrelid) FROM pg_index
         WHERE indrelid = 'entries'::regclass",
        &[],
    )
    .await
    .expect("the index scans")
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

/// p50 and p99 of sorted samples.
pub(crate) fn p50_p99(sorted: &[Duration]) -> (Duration, Duration) {
    (percentile(sorted, 0.5), percentile(sorted, 0.99))
}
