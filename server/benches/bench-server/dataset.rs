//! The decisions the search is measured on: `rows` of them, spread over runtimes, sessions,
//! agents, actions, risk levels and 30 days, generated inside PostgreSQL.
//!
//! Loading ten million rows through the server would take longer than the benchmark may, so the
//! table is filled directly, the fastest way PostgreSQL offers: its secondary indexes and keys
//! are dropped, the rows are inserted by one `INSERT ... SELECT` in the transaction that
//! truncates the table (with `wal_level = minimal` that writes no WAL), and the indexes the
//! decision search reads are built again afterwards from their own definitions, in as many
//! sessions as there are cores. Each row's entry is a real sealed decision of the daemon's shape
//! and size from a pool (one per position in a runtime's chain); its searchable columns are
//! generated per row.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tokio_postgres::Client;

use crate::cluster::{self, Database};
use crate::entries::{self, ACTIONS, AGENTS, RISKS, SESSION_LENGTH};

/// The organisation people search.
pub(crate) const ORG: &str = "fleet";

/// Runtimes of the fleet (fewer for small runs, so each keeps a real chain length).
const MAX_RUNTIMES: u64 = 200;

/// The span the decisions cover, ending at [`END_US`].
pub(crate) const SPAN_US: i64 = 30 * 24 * 3600 * 1_000_000;

/// The newest decision's time: 2026-11-27T00:00:00Z, fixed so that runs compare.
pub(crate) const END_US: i64 = 1_795_737_600_000_000;

/// Bytes of disk a row takes with the search indexes (measured at ten million rows: 1.3 KB of
/// table, 0.6 KB of indexes): the load refuses to start without that much free, plus
/// [`DISK_MARGIN`] left for whoever else uses the disk.
const BYTES_PER_ROW: u64 = 2_000;
const DISK_MARGIN: u64 = 4 << 30;

/// What the generated fleet looks like, for the queries to aim at.
pub(crate) struct Fleet {
    pub rows: u64,
    pub runtime_ids: Vec<String>,
    /// Decisions per runtime.
    pub per_runtime: u64,
}

impl Fleet {
    /// The id of session `n` of runtime `r` (as the load generates it).
    pub(crate) fn session_id(&self, r: usize, n: u64) -> String {
        format!("sess-{r:03}-{n:05}")
    }

    /// Sessions per runtime.
    pub(crate) fn sessions(&self) -> u64 {
        self.per_runtime.div_ceil(SESSION_LENGTH).max(1)
    }
}

/// What building the dataset took.
pub(crate) struct Built {
    pub insert: Duration,
    pub indexes: Duration,
    pub analyze: Duration,
    pub table_bytes: i64,
    pub index_bytes: i64,
    pub rebuilt: Vec<String>,
    pub left_out: Vec<String>,
}

/// Fills `entries` with `rows` decisions of the organisation [`ORG`] (which must exist).
pub(crate) async fn build(db: &Database, rows: u64) -> (Fleet, Built) {
    let runtimes = (rows / 1_000).clamp(1, MAX_RUNTIMES);
    let per_runtime = rows / runtimes;
    let rows = per_runtime * runtimes;
    let runtime_ids: Vec<String> = (0..runtimes)
        .map(|n| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&n.to_le_bytes());
            seed[8] = 0xB5;
            atlasbridge_protocol::trace::checkpoint::encode_public_key(
                &SigningKey::from_bytes(&seed).verifying_key(),
            )
        })
        .collect();
    let fleet = Fleet {
        rows,
        runtime_ids,
        per_runtime,
    };
    let loader = session(db).await;
    register_runtimes(&loader, &fleet).await;
    load_bodies(&loader, per_runtime).await;

    // The indexes the decision search reads are rebuilt; the primary key and the audit-event
    // indexes are not (no decision search uses them, and each would add half a
    // minute at ten million rows).
    let indexes: Vec<(String, String)> = loader
        .query(
            "SELECT indexname, indexdef FROM pg_indexes
             WHERE tablename = 'entries' AND indexname LIKE 'entries_decisions_%' ORDER BY indexname",
            &[],
        )
        .await
        .expect("the search indexes")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let left_out: Vec<String> = loader
        .query(
            "SELECT indexname FROM pg_indexes
             WHERE tablename = 'entries' AND indexname NOT LIKE 'entries_decisions_%' ORDER BY indexname",
            &[],
        )
        .await
        .expect("the other indexes")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let drops: Vec<String> = indexes.iter().map(|(name, _)| name.clone()).collect();
    loader
        .batch_execute(&format!(
            "ALTER TABLE entries DROP CONSTRAINT entries_pkey;
             DROP INDEX entries_audit_by_time, entries_audit_by_runtime, {};",
            drops.join(", ")
        ))
        .await
        .expect("drop the keys and indexes");

    eprintln!("bench-server: inserting {rows} decisions");
    let started = Instant::now();
    insert(&loader, &fleet).await;
    let insert_time = started.elapsed();

    eprintln!("bench-server: building {} indexes", indexes.len());
    let started = Instant::now();
    build_indexes(db, &indexes).await;
    let index_time = started.elapsed();
    let started = Instant::now();
    loader
        .batch_execute("ANALYZE entries; DROP TABLE bench_bodies")
        .await
        .expect("analyze");
    let analyze = started.elapsed();
    let sizes = loader
        .query_one(
            "SELECT pg_table_size('entries'), pg_indexes_size('entries')",
            &[],
        )
        .await
        .expect("sizes");
    let built = Built {
        insert: insert_time,
        indexes: index_time,
        analyze,
        table_bytes: sizes.get(0),
        index_bytes: sizes.get(1),
        rebuilt: drops,
        left_out,
    };
    (fleet, built)
}

/// An owner session scoped to [`ORG`] (row-level security holds for the owner too).
async fn session(db: &Database) -> Client {
    let client = cluster::connect(&db.owner_url).await;
    client
        .batch_execute(&format!(
            "SET atlasbridge.org_id = '{ORG}'; SET jit = off; SET max_parallel_maintenance_workers = 0;
             SET maintenance_work_mem = '64MB'"
        ))
        .await
        .expect("scope the loader");
    client
}

/// Refuses to fill a disk that others share: called before anything else, so that a run that
/// could not finish does not start.
pub(crate) fn check_disk(rows: u64) {
    let Some(dir) = std::env::var_os("ATLASBRIDGE_PG_DIR") else {
        return;
    };
    let output = std::process::Command::new("df")
        .args(["-Pk"])
        .arg(&dir)
        .output()
        .expect("run df");
    let free_kib: u64 = String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(u64::MAX / 1024);
    let needed = rows * BYTES_PER_ROW + DISK_MARGIN;
    assert!(
        free_kib.saturating_mul(1024) >= needed,
        "{rows} rows need about {} GiB free under {} (with a margin); {} GiB are",
        needed >> 30,
        dir.to_string_lossy(),
        free_kib >> 20
    );
}

async fn register_runtimes(loader: &Client, fleet: &Fleet) {
    loader
        .execute(
            "INSERT INTO runtimes (org_id, runtime_id, agent_version, edition)
             SELECT $1, id, 'bench', 'enterprise' FROM unnest($2::text[]) AS id",
            &[&ORG, &fleet.runtime_ids],
        )
        .await
        .expect("register the fleet");
}

/// The pool of entries: one sealed decision per position in a runtime's chain, with what every
/// row at that position shares.
async fn load_bodies(loader: &Client, per_runtime: u64) {
    let chain = entries::chain(
        0,
        per_runtime,
        END_US - SPAN_US,
        SPAN_US / per_runtime as i64,
    );
    loader
        .batch_execute(
            "CREATE UNLOGGED TABLE bench_bodies (k bigint PRIMARY KEY, entry_id text NOT NULL,
                 entry_hash text NOT NULL, prev_hash text NOT NULL, session_no text NOT NULL,
                 body text NOT NULL)",
        )
        .await
        .expect("create the pool");
    let mut text = Vec::with_capacity(chain.len() * 1_200);
    for (k, entry) in chain.iter().enumerate() {
        let session_no = k as u64 / SESSION_LENGTH;
        text.extend_from_slice(
            format!(
                "{k}\t{}\t{}\t{}\t{session_no:05}\t{}\n",
                entry.entry_id,
                entry.entry_hash,
                entry.prev_hash,
                entry.line.replace('\\', "\\\\")
            )
            .as_bytes(),
        );
    }
    copy(loader, "COPY bench_bodies FROM STDIN", text).await;
}

async fn copy(client: &Client, statement: &str, text: Vec<u8>) {
    let sink = client
        .copy_in::<_, std::io::Cursor<Vec<u8>>>(statement)
        .await
        .expect("start COPY");
    let mut sink = std::pin::pin!(sink);
    futures_util::SinkExt::send(&mut sink, std::io::Cursor::new(text))
        .await
        .expect("COPY data");
    sink.finish().await.expect("finish COPY");
}

/// Every row in one statement, in the transaction that empties the table.
async fn insert(loader: &Client, fleet: &Fleet) {
    loader
        .batch_execute(
            "CREATE UNLOGGED TABLE bench_runtimes (r bigint PRIMARY KEY, id text NOT NULL,
                 session_prefix text NOT NULL)",
        )
        .await
        .expect("create the fleet table");
    let mut text = Vec::new();
    for (r, id) in fleet.runtime_ids.iter().enumerate() {
        text.extend_from_slice(format!("{r}\t{id}\tsess-{r:03}-\n").as_bytes());
    }
    copy(loader, "COPY bench_runtimes FROM STDIN", text).await;

    let agents: Vec<String> = (0..AGENTS).map(entries::agent_name).collect();
    let runtimes = fleet.runtime_ids.len() as i64;
    let step_us = SPAN_US / (fleet.per_runtime as i64 * runtimes);
    let start_us = END_US - SPAN_US;
    // Row (r, k) is runtime r's k-th decision: the fleet's decisions interleave in time; a
    // session is SESSION_LENGTH decisions of one runtime, by one of its three agents; action
    // and risk are drawn per row by their shares, from two independent mixes of r and k.
    let sql = format!(
        "BEGIN;
         TRUNCATE entries;
         INSERT INTO entries (org_id, runtime_id, stream, seq, entry_id, entry_hash, prev_hash,
             hash_ok, body, occurred_at, session_id, agent_id, action, risk)
         SELECT '{ORG}', rt.id, 'trace', b.k, b.entry_id, b.entry_hash, b.prev_hash, true, b.body,
             to_timestamp(({start_us} + (b.k * {runtimes} + rt.r) * {step_us})::double precision / 1e6),
             rt.session_prefix || b.session_no,
             (ARRAY[{agents}])[1 + (rt.r * 3 + (b.k / {session}) % 3) % {agent_count}],
             {action},
             {risk}
         FROM bench_bodies b CROSS JOIN bench_runtimes rt;
         COMMIT;
         DROP TABLE bench_runtimes;",
        session = SESSION_LENGTH,
        agents = quoted(&agents),
        agent_count = AGENTS,
        action = drawn(&ACTIONS, "(b.k * 2654435761 + rt.r * 40503) % 100"),
        risk = drawn(&RISKS, "(b.k * 2246822519 + rt.r * 3266489917) % 100"),
    );
    loader
        .batch_execute(&sql)
        .await
        .expect("insert the decisions");
}

/// `'a','b'`: SQL string literals (the names are ours: letters, digits and `-`, `_`).
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `CASE` that picks a name of `shares` (name, percent) by `roll`, a value in 0..100.
fn drawn(shares: &[(&str, u64)], roll: &str) -> String {
    let mut case = String::from("CASE");
    let mut cut = 0;
    for (name, share) in &shares[..shares.len() - 1] {
        cut += share;
        case.push_str(&format!(" WHEN {roll} < {cut} THEN '{name}'"));
    }
    case.push_str(&format!(" ELSE '{}' END", shares[shares.len() - 1].0));
    case
}

/// The search indexes, built again from their own definitions, in one session per core, each
/// session taking the next index as it finishes one (the costliest first).
async fn build_indexes(db: &Database, indexes: &[(String, String)]) {
    // Text columns right after org_id make the costliest sorts.
    const COSTLIEST_FIRST: [&str; 6] = ["agent", "runtime", "session", "risk", "action", "time"];
    let mut ordered: Vec<&(String, String)> = indexes.iter().collect();
    ordered.sort_by_key(|(name, _)| {
        COSTLIEST_FIRST
            .iter()
            .position(|part| name.ends_with(part))
            .unwrap_or(COSTLIEST_FIRST.len())
    });
    let next = std::sync::atomic::AtomicUsize::new(0);
    let sessions = std::thread::available_parallelism().map_or(1, usize::from);
    let mut clients = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        clients.push(session(db).await);
    }
    let builds = clients.iter().map(|client| {
        let (ordered, next) = (&ordered, &next);
        async move {
            while let Some((_, definition)) =
                ordered.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            {
                client
                    .batch_execute(definition)
                    .await
                    .expect("build an index");
            }
        }
    });
    futures_util::future::join_all(builds).await;
}
