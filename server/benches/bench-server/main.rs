//! The governance server's benchmark: the "Governance server" section of
//! `docs/benchmarks.md` on stdout, progress on stderr (`scripts/bench.sh` runs it, with a
//! PostgreSQL cluster of its own, and assembles the report).
//!
//! ```text
//! scripts/postgres.sh start && eval "$(scripts/postgres.sh url)"
//! cargo build --release -p atlasbridge-server
//! cargo bench -p atlasbridge-server --bench bench-server -- [--server PATH]
//!     [--runtimes N] [--entries N] [--rows N] [--samples N]
//! ```
//!
//! - ingest: `--runtimes` (16) runtimes with real Ed25519 identities stream `--entries`
//!   (300,000) sealed, hash-chained decisions over the real control channel of the release
//!   server, as fast as its acks allow; then the same rows go into a bare table with `COPY`;
//! - search: `--rows` (10,000,000) decisions in the benchmark's database, then `--samples`
//!   (100) requests of `GET /v1/decisions` per filter over HTTP, and the same searches timed
//!   in PostgreSQL alone.
//!
//! It lives under `benches/` rather than `src/bin/`: a bench target may use the crate's
//! dev-dependencies (the WebSocket client), so the load generator adds nothing to what the
//! server links, and `cargo build --bins` or an install never builds it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster;
mod dataset;
mod entries;
mod ingest;
mod runtime;
mod search;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use search::{Measured, p50_p99};
use stats::{ms, record_verdict, thousands};

/// The issue's ingest goal on this 2-core machine, in entries per second.
const INGEST_GOAL: f64 = 50_000.0;

struct Settings {
    server: PathBuf,
    runtimes: usize,
    entries: u64,
    rows: u64,
    samples: usize,
}

fn settings() -> Settings {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .expect("the server crate is in the workspace");
    let mut settings = Settings {
        server: workspace.join("target/release/atlasbridge-server"),
        runtimes: 16,
        entries: 300_000,
        rows: 10_000_000,
        samples: 100,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--server" => settings.server = PathBuf::from(value()),
            "--runtimes" => settings.runtimes = value().parse().expect("--runtimes N"),
            "--entries" => settings.entries = value().parse().expect("--entries N"),
            "--rows" => settings.rows = value().parse().expect("--rows N"),
            "--samples" => settings.samples = value().parse().expect("--samples N"),
            // cargo bench passes it to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}; see the source for usage"),
        }
    }
    settings
}

/// The cluster's settings that the figures depend on, as the report states them.
const SETTINGS_SHOWN: [&str; 6] = [
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
];

#[tokio::main]
async fn main() {
    let settings = settings();
    dataset::check_disk(settings.rows);
    let started = Instant::now();
    let db = cluster::Database::create().await;
    let server = cluster::Server::start(&settings.server, &db, 16);
    let postgres = postgres_facts(&db).await;
    let ingest = ingest::run(&server, &db, settings.runtimes, settings.entries).await;
    let ingest_time = started.elapsed();
    server.run(&["create-org", dataset::ORG], "");
    let (fleet, built) = dataset::build(&db, settings.rows).await;
    let searches = search::run(&server, &db, &fleet, settings.samples).await;
    drop(server);
    db.drop_now().await;
    report(
        &settings,
        &postgres,
        &ingest,
        &fleet,
        &built,
        &searches,
        [ingest_time, started.elapsed()],
    );
}

/// The PostgreSQL version and the settings of [`SETTINGS_SHOWN`].
async fn postgres_facts(db: &cluster::Database) -> (String, Vec<(String, String)>) {
    let client = cluster::connect(&db.owner_url).await;
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .expect("the version")
        .get(0);
    let mut shown = Vec::new();
    for name in SETTINGS_SHOWN {
        let value: String = client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .expect("a setting")
            .get(0);
        shown.push((name.to_owned(), value));
    }
    (version, shown)
}

fn report(
    settings: &Settings,
    (version, shown): &(String, Vec<(String, String)>),
    ingest: &ingest::Figures,
    fleet: &dataset::Fleet,
    built: &dataset::Built,
    searches: &[Measured],
    [ingest_time, total]: [Duration; 2],
) {
    println!("## Governance server");
    println!();
    println!(
        "Binary: `cargo bench -p atlasbridge-server --bench bench-server -- --runtimes {} --entries {} \
         --rows {} --samples {}` (`server/benches/bench-server/`), {:.0} s in all. It starts the \
         release `atlasbridge-server` on 127.0.0.1 against a fresh database of a PostgreSQL {version} \
         cluster of its own (`scripts/postgres.sh`, loopback, with {}), and drops the database at \
         the end. Server, PostgreSQL and the load generator share the machine's cores.",
        settings.runtimes,
        settings.entries,
        settings.rows,
        settings.samples,
        total.as_secs_f64(),
        shown
            .iter()
            .map(|(name, value)| format!("`{name} = {value}`"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    report_ingest(ingest, ingest_time);
    report_search(fleet, built, searches);
}

fn report_ingest(ingest: &ingest::Figures, part: Duration) {
    println!();
    println!("### Ingest");
    println!();
    println!(
        "{} runtimes, each a real Ed25519 identity with its own hash chain of realistic decisions \
         (every member of trace-format.md, sealed with the protocol crate), open the control \
         channel (token, challenge, hello, welcome) and stream `audit_batch`es framed and signed \
         as the daemon frames them (at most 500 entries and 64 KiB a message, so some {:.0} \
         decisions each), keeping up to the daemon's 10,000 entries in flight. The server \
         re-verifies every entry's hash and link, stores it with its search columns, moves the \
         chain status on, publishes the live events and acknowledges only after COMMIT. Timed \
         from the first batch sent to the last ack received; every chain is then checked to be \
         held whole and `continuous`. The baseline is the same rows, with the same column values, \
         put with text `COPY` into a table without keys, indexes, checks or row-level security, \
         one session per core. The part took {:.0} s.",
        ingest.runtimes,
        ingest.mean_batch,
        part.as_secs_f64()
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| decisions | {} |", thousands(ingest.entries as f64));
    println!(
        "| batches, acks | {} batches ({:.1} decisions each), {} acks: {:.1} batches per COMMIT |",
        thousands(ingest.batches as f64),
        ingest.mean_batch,
        thousands(ingest.acks as f64),
        ingest.batches as f64 / ingest.acks.max(1) as f64
    );
    println!(
        "| first batch to last ack | {:.2} s |",
        ingest.elapsed.as_secs_f64()
    );
    println!(
        "| **ingest** | **{} decisions/s** |",
        thousands(ingest.rate())
    );
    let per_entry = |cpu: Duration| cpu.as_secs_f64() * 1e6 / ingest.entries as f64;
    println!(
        "| CPU per decision: server | {:.1} µs ({:.2} s in all) |",
        per_entry(ingest.server_cpu),
        ingest.server_cpu.as_secs_f64()
    );
    if let Some(cpu) = ingest.database_cpu {
        println!(
            "| CPU per decision: PostgreSQL | {:.1} µs ({:.2} s in all) |",
            per_entry(cpu),
            cpu.as_secs_f64()
        );
    }
    println!(
        "| baseline: `COPY` into a bare table, {} sessions | {} rows/s ({:.2} s) |",
        ingest.copy_sessions,
        thousands(ingest.copy_rate()),
        ingest.copy_elapsed.as_secs_f64()
    );
    println!(
        "| ingest ÷ baseline | {:.2} |",
        ingest.rate() / ingest.copy_rate()
    );
    let rate = ingest.rate();
    record_verdict(
        "server ingest into PostgreSQL ≥ 50,000 entries/s (issue 8)",
        &format!("{} entries/s", thousands(rate)),
        if rate >= INGEST_GOAL {
            "met"
        } else {
            "not met"
        },
    );
}

fn report_search(fleet: &dataset::Fleet, built: &dataset::Built, searches: &[Measured]) {
    let gib = |bytes: i64| bytes as f64 / (1u64 << 30) as f64;
    println!();
    println!("### Decision search");
    println!();
    println!(
        "{} decisions of {} runtimes over 30 days ({} per runtime, in sessions of {} decisions by \
         one of {} agents; actions and risk levels drawn by their shares: auto_reply 70 %, \
         require_human 15 %, notify_only 10 %, deny 5 %; none 40 %, low 30 %, medium 20 %, \
         high 8 %, critical 2 %). They are generated inside PostgreSQL: each row's entry is a real \
         sealed decision from a pool, its searchable columns are its own. The table's keys and \
         indexes are dropped, the rows inserted in the transaction that truncates it, and the \
         indexes the decision search reads rebuilt from their definitions ({}); {} are left out, \
         as no decision search reads them. Insert {:.0} s, indexes {:.0} s, `ANALYZE` {:.0} s; \
         table {:.1} GiB, indexes {:.1} GiB.",
        thousands(fleet.rows as f64),
        fleet.runtime_ids.len(),
        thousands(fleet.per_runtime as f64),
        entries::SESSION_LENGTH,
        entries::AGENTS,
        built.rebuilt.join(", "),
        if built.left_out.is_empty() {
            "none".to_owned()
        } else {
            format!("the primary key and {}", built.left_out.join(", "))
        },
        built.insert.as_secs_f64(),
        built.indexes.as_secs_f64(),
        built.analyze.as_secs_f64(),
        gib(built.table_bytes),
        gib(built.index_bytes),
    );
    println!();
    println!(
        "Then, per kind of search, {} searches (after 5 to warm up), each with other targets drawn \
         at random: `GET /v1/decisions` over HTTP with a session bearer token, timed from the \
         request to the last byte of the page (100 rows), and the same search as \
         `store::search::search_decisions` in an org-scoped transaction as the app role, the \
         baseline (its statement only). Both must find the same rows. Cursor walks follow \
         `next_cursor` for 10 pages from a random point in time; their figures are per page.",
        searches
            .first()
            .map_or(0, |m| m.http.len() / m.pages.max(1)),
    );
    println!();
    println!(
        "| search | index scanned | rows/page | HTTP p50 | HTTP p99 | PostgreSQL p50 | PostgreSQL p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for measured in searches {
        let (http50, http99) = p50_p99(&measured.http);
        let (sql50, sql99) = p50_p99(&measured.sql);
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            measured.name,
            measured
                .indexes
                .iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", "),
            measured.rows,
            ms(http50),
            ms(http99),
            ms(sql50),
            ms(sql99)
        );
    }
    let pooled = |pages: usize| {
        let mut all: Vec<Duration> = searches
            .iter()
            .filter(|m| (m.pages == 1) == (pages == 1))
            .flat_map(|m| m.http.iter().copied())
            .collect();
        all.sort_unstable();
        p50_p99(&all)
    };
    let rows = thousands(fleet.rows as f64);
    let (p50, p99) = pooled(1);
    record_verdict(
        &format!("decision search on {rows} rows over HTTP, p50 / p99 (every filter, one page)"),
        &format!("{} / {}", ms(p50), ms(p99)),
        "—",
    );
    let (p50, p99) = pooled(WALK);
    record_verdict(
        &format!("decision search on {rows} rows over HTTP, cursor walk, p50 / p99 per page"),
        &format!("{} / {}", ms(p50), ms(p99)),
        "—",
    );
}

/// Any number of pages other than one: a walk.
const WALK: usize = 2;
