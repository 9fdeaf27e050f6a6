//! Ingest: runtimes stream their chains over the real control channel as fast as acks allow,
//! then the same rows go into a bare table with `COPY`, the baseline of what PostgreSQL alone
//! needs to take them.

use std::io::Cursor;
use std::time::{Duration, Instant};

use atlasbridge_protocol::cloud::messages::Stream;
use atlasbridge_server::store;
use futures_util::SinkExt as _;

use crate::cluster::{self, Database, Server};
use crate::entries::{self, Sealed};
use crate::runtime::Runtime;
use crate::stats::{cluster_processes, cpu_time};

/// The organisation the runtimes belong to.
const ORG: &str = "ingest";

/// Time between two decisions of a runtime, in microseconds.
const SPACING_US: i64 = 2_000_000;

/// What the ingest part measured.
pub(crate) struct Figures {
    pub runtimes: usize,
    pub entries: u64,
    pub batches: usize,
    pub mean_batch: f64,
    pub acks: usize,
    pub elapsed: Duration,
    /// CPU time of the server process, and of the PostgreSQL cluster, over the run.
    pub server_cpu: Duration,
    pub database_cpu: Option<Duration>,
    /// The `COPY` baseline: sessions and time.
    pub copy_sessions: usize,
    pub copy_elapsed: Duration,
}

impl Figures {
    pub(crate) fn rate(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn copy_rate(&self) -> f64 {
        self.entries as f64 / self.copy_elapsed.as_secs_f64()
    }
}

/// Streams `entries` decisions from `runtimes` runtimes into `server`, checks that every chain
/// arrived whole and `continuous`, then times the `COPY` baseline.
pub(crate) async fn run(server: &Server, db: &Database, runtimes: usize, entries: u64) -> Figures {
    server.run(&["create-org", ORG], "");
    let api_key = server.run(&["create-api-key", ORG, "--label", "bench"], "");
    let per_runtime = entries / runtimes as u64;
    let entries = per_runtime * runtimes as u64;
    eprintln!("bench-server: sealing {entries} decisions of {runtimes} runtimes");
    let now_us = jiff::Timestamp::now().as_microsecond();
    let start_us = now_us - i64::try_from(per_runtime).unwrap_or(0) * SPACING_US;
    let (chains, fleet) = seal_and_frame(runtimes, per_runtime, start_us);
    let mean_batch = fleet.iter().map(Runtime::mean_batch).sum::<f64>() / runtimes as f64;

    let (http, ws) = (server.http_url(""), server.ws_url());
    let sockets = futures_util::future::join_all(
        fleet
            .iter()
            .map(|runtime| runtime.connect(&http, &ws, &api_key)),
    )
    .await;
    let runtime_ids: Vec<String> = fleet.iter().map(|r| r.runtime_id.clone()).collect();

    eprintln!("bench-server: streaming");
    let postmaster = cluster::postmaster_pid();
    let database_pids = postmaster.map(cluster_processes).unwrap_or_default();
    let (server_before, database_before) = (cpu_time(&[server.pid()]), cpu_time(&database_pids));
    let tasks: Vec<_> = fleet
        .into_iter()
        .zip(sockets)
        .map(|(runtime, socket)| tokio::spawn(runtime.stream(socket)))
        .collect();
    let mut streamed = Vec::with_capacity(tasks.len());
    for task in tasks {
        streamed.push(task.await.expect("a runtime's stream"));
    }
    let server_cpu = cpu_time(&[server.pid()]).saturating_sub(server_before);
    let database_cpu = postmaster.map(|_| {
        let pids = cluster_processes(postmaster.unwrap_or_default());
        cpu_time(&pids).saturating_sub(database_before)
    });
    let first = streamed
        .iter()
        .map(|s| s.first_sent)
        .min()
        .expect("runtimes");
    let last = streamed
        .iter()
        .map(|s| s.last_acked)
        .max()
        .expect("runtimes");

    check_stored(db, &runtime_ids, per_runtime).await;
    eprintln!("bench-server: the COPY baseline");
    let copy_sessions = std::thread::available_parallelism().map_or(1, usize::from);
    let copy_elapsed = copy_baseline(db, &runtime_ids, &chains, copy_sessions).await;
    Figures {
        runtimes,
        entries,
        batches: streamed.iter().map(|s| s.batches).sum(),
        mean_batch,
        acks: streamed.iter().map(|s| s.acks).sum(),
        elapsed: last - first,
        server_cpu,
        database_cpu,
        copy_sessions,
        copy_elapsed,
    }
}

/// Seals every runtime's chain and frames it, one thread per core.
fn seal_and_frame(
    runtimes: usize,
    per_runtime: u64,
    start_us: i64,
) -> (Vec<Vec<Sealed>>, Vec<Runtime>) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut built: Vec<(usize, Vec<Sealed>, Runtime)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    (thread..runtimes)
                        .step_by(threads)
                        .map(|n| {
                            let chain = entries::chain(n, per_runtime, start_us, SPACING_US);
                            let runtime = Runtime::new(ORG, &chain);
                            (n, chain, runtime)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a sealing thread"))
            .collect()
    });
    built.sort_by_key(|(n, _, _)| *n);
    built
        .into_iter()
        .map(|(_, chain, runtime)| (chain, runtime))
        .unzip()
}

/// Every chain is held whole and judged `continuous`, with no row doubled.
async fn check_stored(db: &Database, runtime_ids: &[String], per_runtime: u64) {
    let mut client = cluster::connect(&db.app_url).await;
    let tx = client.transaction().await.expect("begin");
    tx.execute("SELECT set_config('atlasbridge.org_id', $1, true)", &[&ORG])
        .await
        .expect("scope to the org");
    for runtime_id in runtime_ids {
        let status = store::chain_status(&tx, runtime_id, Stream::Trace)
            .await
            .expect("chain status")
            .expect("the runtime is registered");
        assert_eq!(
            (status.status.as_str(), status.next_seq),
            ("continuous", per_runtime),
            "{runtime_id}: {status:?}"
        );
    }
    let rows: i64 = tx
        .query_one("SELECT count(*) FROM entries WHERE stream = 'trace'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows as u64, per_runtime * runtime_ids.len() as u64);
    tx.commit().await.expect("commit");
}

/// The same rows, with the same column values, into a table without keys, indexes, checks or
/// row-level security, with plain text `COPY` in `sessions` parallel sessions: its elapsed time.
async fn copy_baseline(
    db: &Database,
    runtime_ids: &[String],
    chains: &[Vec<Sealed>],
    sessions: usize,
) -> Duration {
    let owner = cluster::connect(&db.owner_url).await;
    // Created before (not in) the COPY's transaction: with wal_level = minimal a table created
    // in the same transaction skips the WAL, which the server's inserts never do.
    owner
        .batch_execute("CREATE TABLE copy_baseline (LIKE entries INCLUDING DEFAULTS);")
        .await
        .expect("create the baseline table");
    // Written straight into the messages COPY sends, before the clock starts.
    const CHUNK: usize = 1 << 20;
    let mut chunked: Vec<Vec<Cursor<Vec<u8>>>> = (0..sessions).map(|_| Vec::new()).collect();
    for (n, (runtime_id, chain)) in runtime_ids.iter().zip(chains).enumerate() {
        let chunks = &mut chunked[n % sessions];
        for (seq, entry) in chain.iter().enumerate() {
            if chunks.last().is_none_or(|c| c.get_ref().len() >= CHUNK) {
                chunks.push(Cursor::new(Vec::with_capacity(CHUNK + 4096)));
            }
            let Some(chunk) = chunks.last_mut() else {
                continue;
            };
            let line = format!(
                "{ORG}\t{runtime_id}\ttrace\t{seq}\t{}\t{}\t{}\tt\t{}\t{}\t{}\t{}\t{}\t{}\t\\N\n",
                entry.entry_id,
                entry.entry_hash,
                entry.prev_hash,
                entry.line.replace('\\', "\\\\"),
                entry.timestamp,
                entry.session_id,
                entry.agent_id,
                entry.action,
                entry.risk,
            );
            chunk.get_mut().extend_from_slice(line.as_bytes());
        }
    }
    let mut clients = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        clients.push(cluster::connect(&db.owner_url).await);
    }
    let started = Instant::now();
    let copies = clients.iter().zip(chunked).map(|(client, chunks)| async move {
        let sink = client
            .copy_in::<_, Cursor<Vec<u8>>>(
                "COPY copy_baseline (org_id, runtime_id, stream, seq, entry_id, entry_hash, prev_hash,
                     hash_ok, body, occurred_at, session_id, agent_id, action, risk, event_type)
                 FROM STDIN",
            )
            .await
            .expect("start COPY");
        let mut sink = std::pin::pin!(sink);
        for chunk in chunks {
            sink.send(chunk).await.expect("COPY data");
        }
        sink.finish().await.expect("finish COPY")
    });
    let copied: u64 = futures_util::future::join_all(copies)
        .await
        .into_iter()
        .sum();
    let elapsed = started.elapsed();
    assert_eq!(copied, chains.iter().map(|c| c.len() as u64).sum::<u64>());
    owner
        .batch_execute("DROP TABLE copy_baseline")
        .await
        .expect("drop the baseline table");
    elapsed
}
