//! `trace integrity-check --against-cloud` and `audit verify --against-cloud`: a local chain
//! compared with what the governance server witnessed of it (`cloud.witness`, which the daemon
//! answers with its uplink's token: the CLI never holds the API key).
//!
//! Both are hash chains, so agreement is monotone: if the local entry at seq `s` has the hash
//! the server holds for `s`, every entry before it agrees too (each hash covers the previous
//! one); once they differ, they differ from there on. The fork point is therefore found by a
//! search over the range the server holds contiguously, asking for [`PROBES_PER_REQUEST`] seqs
//! at a time: each round keeps one of `PROBES_PER_REQUEST + 1` parts, so a chain of `n` entries
//! takes about `log(n) / log(17)` requests (5 for a million). The local hashes come from
//! verifying the files (only entries that verify count), once per round.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use atlasbridge_protocol::ErrorCode;
use atlasbridge_protocol::cloud::messages::{Stream, WireHead};
use atlasbridge_protocol::cloud::witness::{WitnessAnswer, WitnessQuery, WitnessedChain};
use atlasbridge_protocol::methods::{self as m, CloudWitnessResult};
use atlasbridge_protocol::trace::IntegrityReport;
use atlasbridge_protocol::trace::verify::{self, ChainKind, VerifyOptions};
use serde::Serialize;

use super::{CliError, Context, EXIT_FAILURE, EXIT_FEATURE_DISABLED, EXIT_OK};
use crate::ClientError;

/// Seqs asked per request (the server takes up to 256): 16 keeps each answer small and needs
/// five round trips for a million entries.
pub(crate) const PROBES_PER_REQUEST: u64 = 16;

/// Exit status: the local trace agrees as far as the server holds it, but the server holds
/// nothing past some seq (not streamed yet, or a server restored from a backup).
pub(crate) const EXIT_NOT_WITNESSED: u8 = 4;
/// Exit status: the server could not be asked (the daemon's call failed, or was refused).
pub(crate) const EXIT_CLOUD_UNAVAILABLE: u8 = 5;

/// How the local trace stands against the server's witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every local entry the server could be asked about agrees, through `through` (the local
    /// head; `None` when both are empty).
    Agrees { through: Option<u64> },
    /// The chains part: at `seq` the local hash (`None`: no local entry there) is not the one
    /// the server holds. `agrees_through` is the last seq known to agree: `seq - 1` when the
    /// server holds every entry before `seq`, less when it holds nothing in between.
    Fork {
        seq: u64,
        agrees_through: Option<u64>,
        local_hash: Option<String>,
        server_hash: String,
        source: String,
    },
    /// The server holds nothing past `through` (`None`: nothing at all), and agrees up to it;
    /// the local trace goes on to `local_head`.
    ServerBehind {
        through: Option<u64>,
        local_head: u64,
    },
    /// The local trace ends at `local_head`, but the server witnessed `server_seq` beyond it:
    /// entries were removed (or the data directory restored from an older copy).
    LocalBehind {
        local_head: Option<u64>,
        agrees_through: Option<u64>,
        server_seq: u64,
    },
}

/// The comparison and what the server said of its copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Comparison {
    pub outcome: Outcome,
    /// Requests made to the server (through the daemon).
    pub requests: usize,
    /// The server's first answer (its chain status, witness verdict and highest head).
    pub server: WitnessAnswer,
}

/// How the hashes at one seq compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Judgement {
    /// The server holds nothing there.
    NoEvidence,
    Agrees,
    Differs {
        local_hash: Option<String>,
        server_hash: String,
        source: String,
    },
}

fn judge(answer: &WitnessAnswer, local: &BTreeMap<u64, String>, seq: u64) -> Judgement {
    let mine = local.get(&seq);
    let mut evidence = answer.at(seq).peekable();
    if evidence.peek().is_none() {
        return Judgement::NoEvidence;
    }
    match evidence.find(|held| mine != Some(&held.entry_hash)) {
        None => Judgement::Agrees,
        Some(held) => Judgement::Differs {
            local_hash: mine.cloned(),
            server_hash: held.entry_hash.clone(),
            source: held.source.clone(),
        },
    }
}

/// The local hashes at some seqs (of entries that verify).
pub(crate) type LocalHashes<'a, E> = dyn FnMut(&[u64]) -> Result<BTreeMap<u64, String>, E> + 'a;
/// The server's answer about some seqs.
pub(crate) type AskServer<'a, E> = dyn FnMut(&[u64]) -> Result<WitnessAnswer, E> + 'a;

/// Asks both sides about the same seqs.
struct Asker<'a, E> {
    local: &'a mut LocalHashes<'a, E>,
    server: &'a mut AskServer<'a, E>,
    requests: usize,
}

impl<E> Asker<'_, E> {
    fn ask(&mut self, seqs: &[u64]) -> Result<(WitnessAnswer, BTreeMap<u64, String>), E> {
        self.requests += 1;
        let answer = (self.server)(seqs)?;
        let local = if seqs.is_empty() {
            BTreeMap::new()
        } else {
            (self.local)(seqs)?
        };
        Ok((answer, local))
    }

    fn judge_one(&mut self, seq: u64) -> Result<Judgement, E> {
        let (answer, local) = self.ask(&[seq])?;
        Ok(judge(&answer, &local, seq))
    }
}

/// Compares a local chain whose last verified entry is `local_head` with the server's witness.
/// `local` gives the local hashes at some seqs (of entries that verify); `server` asks the server
/// about some seqs.
pub(crate) fn compare<'a, E>(
    local_head: Option<u64>,
    local: &'a mut LocalHashes<'a, E>,
    server: &'a mut AskServer<'a, E>,
) -> Result<Comparison, E> {
    let mut asker = Asker {
        local,
        server,
        requests: 0,
    };
    let probes: Vec<u64> = local_head.into_iter().collect();
    let (first, local_hashes) = asker.ask(&probes)?;
    let outcome = match local_head {
        None => match first.highest_seq() {
            None => Outcome::Agrees { through: None },
            Some(server_seq) => beyond_local(&mut asker, &first, None, None, server_seq)?,
        },
        Some(head) => match judge(&first, &local_hashes, head) {
            Judgement::Differs {
                local_hash,
                server_hash,
                source,
            } => search(
                &mut asker,
                &first,
                None,
                (head, local_hash, server_hash, source),
            )?,
            Judgement::Agrees => match first.highest_seq().filter(|seq| *seq > head) {
                Some(server_seq) => {
                    beyond_local(&mut asker, &first, Some(head), Some(head), server_seq)?
                }
                None => Outcome::Agrees {
                    through: Some(head),
                },
            },
            Judgement::NoEvidence => match first.highest_seq() {
                Some(server_seq) if server_seq > head => {
                    beyond_local(&mut asker, &first, Some(head), None, server_seq)?
                }
                None => Outcome::ServerBehind {
                    through: None,
                    local_head: head,
                },
                // The last thing the server holds before the local head decides.
                Some(last) => match asker.judge_one(last)? {
                    Judgement::Differs {
                        local_hash,
                        server_hash,
                        source,
                    } => search(
                        &mut asker,
                        &first,
                        None,
                        (last, local_hash, server_hash, source),
                    )?,
                    Judgement::Agrees | Judgement::NoEvidence => Outcome::ServerBehind {
                        through: Some(last),
                        local_head: head,
                    },
                },
            },
        },
    };
    Ok(Comparison {
        outcome,
        requests: asker.requests,
        server: first,
    })
}

/// The server witnessed `server_seq`, past the local head as it was read. The daemon may have
/// written on meanwhile, so the files are asked again at that seq before calling it a loss.
fn beyond_local<E>(
    asker: &mut Asker<'_, E>,
    first: &WitnessAnswer,
    local_head: Option<u64>,
    agrees_through: Option<u64>,
    server_seq: u64,
) -> Result<Outcome, E> {
    Ok(match asker.judge_one(server_seq)? {
        Judgement::Agrees => Outcome::Agrees {
            through: Some(server_seq),
        },
        Judgement::Differs {
            local_hash: None, ..
        }
        | Judgement::NoEvidence => Outcome::LocalBehind {
            local_head,
            agrees_through,
            server_seq,
        },
        Judgement::Differs {
            local_hash,
            server_hash,
            source,
        } => search(
            asker,
            first,
            agrees_through,
            (server_seq, local_hash, server_hash, source),
        )?,
    })
}

/// The first seq where the chains differ, knowing they agree through `agrees` and differ at
/// `differs` (with what was found there).
fn search<E>(
    asker: &mut Asker<'_, E>,
    first: &WitnessAnswer,
    agrees: Option<u64>,
    differs: (u64, Option<String>, String, String),
) -> Result<Outcome, E> {
    let (mut hi, mut local_hash, mut server_hash, mut source) = differs;
    let mut lo = agrees.map_or(0, |seq| seq + 1);
    // Only the contiguous copy is dense: every seq in it has the server's entry.
    let dense_end = first
        .chain
        .as_ref()
        .and_then(|chain: &WitnessedChain| chain.next_seq.checked_sub(1));
    if dense_end.is_none_or(|end| end < hi) {
        match dense_end.filter(|end| *end >= lo) {
            None => {
                return Ok(fork(hi, agrees, local_hash, server_hash, source));
            }
            Some(end) => match asker.judge_one(end)? {
                Judgement::Differs {
                    local_hash: local,
                    server_hash: server,
                    source: from,
                } => (hi, local_hash, server_hash, source) = (end, local, server, from),
                // The server holds nothing between `end` and `hi`: the fork is in there.
                Judgement::Agrees | Judgement::NoEvidence => {
                    return Ok(fork(hi, Some(end), local_hash, server_hash, source));
                }
            },
        }
    }
    while lo < hi {
        let span = hi - lo;
        let probes: Vec<u64> = if span <= PROBES_PER_REQUEST {
            (lo..hi).collect()
        } else {
            (1..=PROBES_PER_REQUEST)
                .map(|i| lo + i * span / (PROBES_PER_REQUEST + 1))
                .collect()
        };
        let (answer, local) = asker.ask(&probes)?;
        let mut moved = false;
        for (index, probe) in probes.iter().enumerate() {
            if let Judgement::Differs {
                local_hash: local,
                server_hash: server,
                source: from,
            } = judge(&answer, &local, *probe)
            {
                (hi, local_hash, server_hash, source) = (*probe, local, server, from);
                if index > 0 {
                    lo = probes[index - 1] + 1;
                }
                moved = true;
                break;
            }
        }
        if !moved {
            lo = probes.last().map_or(hi, |last| last + 1);
        }
    }
    Ok(fork(hi, hi.checked_sub(1), local_hash, server_hash, source))
}

fn fork(
    seq: u64,
    agrees_through: Option<u64>,
    local_hash: Option<String>,
    server_hash: String,
    source: String,
) -> Outcome {
    Outcome::Fork {
        seq,
        agrees_through,
        local_hash,
        server_hash,
        source,
    }
}

/// The `against_cloud` member of `--json`.
#[derive(Debug, Serialize)]
struct Report<'a> {
    outcome: &'static str,
    /// The last seq known to agree.
    agrees_through: Option<u64>,
    /// The local head, as compared.
    local_head: Option<u64>,
    /// `local_behind`: the highest seq the server witnessed.
    server_seq: Option<u64>,
    fork: Option<ForkReport<'a>>,
    requests: usize,
    runtime_id: &'a str,
    witness_status: Option<&'a str>,
    server_chain: Option<&'a WitnessedChain>,
    highest_head: Option<&'a WireHead>,
}

#[derive(Debug, Serialize)]
struct ForkReport<'a> {
    seq: u64,
    local_hash: Option<&'a str>,
    server_hash: &'a str,
    source: &'a str,
}

impl Comparison {
    fn report(&self, local_head: Option<u64>) -> Report<'_> {
        let (outcome, agrees_through, server_seq, fork) = match &self.outcome {
            Outcome::Agrees { through } => ("agrees", *through, None, None),
            Outcome::Fork {
                seq,
                agrees_through,
                local_hash,
                server_hash,
                source,
            } => (
                "fork",
                *agrees_through,
                None,
                Some(ForkReport {
                    seq: *seq,
                    local_hash: local_hash.as_deref(),
                    server_hash,
                    source,
                }),
            ),
            Outcome::ServerBehind { through, .. } => ("server_behind", *through, None, None),
            Outcome::LocalBehind {
                agrees_through,
                server_seq,
                ..
            } => ("local_behind", *agrees_through, Some(*server_seq), None),
        };
        Report {
            outcome,
            agrees_through,
            local_head,
            server_seq,
            fork,
            requests: self.requests,
            runtime_id: &self.server.runtime_id,
            witness_status: self.server.witness_status.as_deref(),
            server_chain: self.server.chain.as_ref(),
            highest_head: self.server.highest_head.as_ref(),
        }
    }

    /// 0 agrees, 1 the chains part or local entries are gone, 4 not all witnessed yet.
    fn exit_status(&self) -> u8 {
        match self.outcome {
            Outcome::Agrees { .. } => EXIT_OK,
            Outcome::Fork { .. } | Outcome::LocalBehind { .. } => EXIT_FAILURE,
            Outcome::ServerBehind { .. } => EXIT_NOT_WITNESSED,
        }
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

fn requests(count: usize) -> String {
    if count == 1 {
        "1 request".to_owned()
    } else {
        format!("{count} requests")
    }
}

fn print(what: &str, comparison: &Comparison) {
    let asked = requests(comparison.requests);
    match &comparison.outcome {
        Outcome::Agrees { through: None } => {
            println!("{what} is empty, and the server holds nothing of it ({asked})");
        }
        Outcome::Agrees { through: Some(seq) } => {
            println!("{what} agrees with what the server witnessed through seq {seq} ({asked})");
        }
        Outcome::Fork {
            seq,
            agrees_through,
            local_hash,
            server_hash,
            source,
        } => {
            let local = local_hash
                .as_deref()
                .map_or_else(|| "none".to_owned(), |h| format!("{}…", short(h)));
            println!(
                "{what} FORKS from what the server witnessed at seq {seq}: local hash {local}, the server witnessed {}… ({source})",
                short(server_hash)
            );
            match agrees_through {
                Some(agreed) if agreed + 1 == *seq => {
                    println!("  agrees through seq {agreed}; found in {asked}");
                }
                Some(agreed) => println!(
                    "  agrees through seq {agreed}; the server holds nothing between seq {} and {}, so the chains part there or at {seq} ({asked})",
                    agreed + 1,
                    seq - 1
                ),
                None if *seq == 0 => println!("  from the first entry on ({asked})"),
                None => println!("  at seq {seq} or before it ({asked})"),
            }
        }
        Outcome::ServerBehind {
            through: None,
            local_head,
        } => println!(
            "the server holds nothing of this {what}; the local one goes to seq {local_head} ({asked})"
        ),
        Outcome::ServerBehind {
            through: Some(seq),
            local_head,
        } => println!(
            "the server holds nothing past seq {seq}; the local {what} agrees up to it and goes on to seq {local_head} ({} entries not witnessed yet; {asked})",
            local_head - seq
        ),
        Outcome::LocalBehind {
            local_head,
            server_seq,
            ..
        } => {
            let end =
                local_head.map_or_else(|| "is empty".to_owned(), |h| format!("ends at seq {h}"));
            println!(
                "the local {what} {end}, but the server witnessed seq {server_seq}: entries were removed ({asked})"
            );
        }
    }
    if let Some(status) = comparison.server.witness_status.as_deref()
        && status != "ok"
    {
        println!("  the server flagged this runtime: {status}");
    }
}

/// Runs the comparison for `--against-cloud` (trace or audit log) and prints it with the local
/// `report`: the exit status.
pub(super) fn run(
    ctx: &Context,
    kind: ChainKind,
    files: &[PathBuf],
    report: &IntegrityReport,
) -> Result<ExitCode, CliError> {
    let stream = match kind {
        ChainKind::Trace => Stream::Trace,
        ChainKind::Audit => Stream::Audit,
    };
    let mut client = ctx.connect()?;
    let options = VerifyOptions {
        kind,
        ..VerifyOptions::default()
    };
    let mut local = |seqs: &[u64]| -> Result<BTreeMap<u64, String>, CliError> {
        verify::verify_chain(files, &options, seqs)
            .map(|verified| verified.hashes)
            .map_err(|e| CliError::Unreadable(e.to_string()))
    };
    let mut server = |seqs: &[u64]| -> Result<WitnessAnswer, CliError> {
        let query = WitnessQuery {
            stream,
            seqs: seqs.to_vec(),
            ranges: Vec::new(),
        };
        let answer: CloudWitnessResult = client.call(m::CLOUD_WITNESS, Some(query))?;
        Ok(answer)
    };
    let local_head = report.head.as_ref().map(|head| head.seq);
    let comparison = match compare(local_head, &mut local, &mut server) {
        Ok(comparison) => comparison,
        Err(CliError::Client(ClientError::Rpc(e))) if e.code != ErrorCode::FeatureDisabled => {
            return Ok(ctx.out.rpc_error(&e, EXIT_CLOUD_UNAVAILABLE));
        }
        Err(CliError::Client(ClientError::Rpc(e))) => {
            return Ok(ctx
                .out
                .error("feature_disabled", &e.message, EXIT_FEATURE_DISABLED));
        }
        Err(e) => return Err(e),
    };
    if ctx.out.is_json() {
        let mut document = serde_json::to_value(report).unwrap_or_default();
        if let Some(members) = document.as_object_mut() {
            members.insert(
                "against_cloud".to_owned(),
                serde_json::to_value(comparison.report(local_head)).unwrap_or_default(),
            );
        }
        ctx.out.json(&document);
    } else {
        let what = match kind {
            ChainKind::Trace => "trace",
            ChainKind::Audit => "audit log",
        };
        print(what, &comparison);
    }
    let status = if report.valid {
        comparison.exit_status()
    } else {
        EXIT_FAILURE
    };
    Ok(ExitCode::from(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use atlasbridge_protocol::cloud::witness::WitnessedHash;

    fn hash(tag: char, seq: u64) -> String {
        format!("{tag}{seq:063}")
    }

    /// A server holding entries `0..held` of a chain whose hashes are `server_tag` up to
    /// `fork_at` and `'x'` from there on, plus optional heads.
    struct FakeServer {
        held: u64,
        fork_at: Option<u64>,
        heads: Vec<(u64, String)>,
        requests: Vec<Vec<u64>>,
    }

    impl FakeServer {
        fn hash_at(&self, seq: u64) -> String {
            if self.fork_at.is_some_and(|f| seq >= f) {
                hash('x', seq)
            } else {
                hash('a', seq)
            }
        }

        fn answer(&mut self, seqs: &[u64]) -> WitnessAnswer {
            self.requests.push(seqs.to_vec());
            let mut hashes = Vec::new();
            for seq in seqs {
                if *seq < self.held {
                    hashes.push(WitnessedHash {
                        seq: *seq,
                        entry_hash: self.hash_at(*seq),
                        source: "entry".into(),
                    });
                }
                for (head, hash) in &self.heads {
                    if head == seq {
                        hashes.push(WitnessedHash {
                            seq: *seq,
                            entry_hash: hash.clone(),
                            source: "heartbeat".into(),
                        });
                    }
                }
            }
            WitnessAnswer {
                runtime_id: "ed25519:r".into(),
                stream: Stream::Trace,
                chain: (self.held > 0 || !self.heads.is_empty()).then(|| WitnessedChain {
                    status: "continuous".into(),
                    next_seq: self.held,
                    max_seq: self.held.checked_sub(1),
                    gap: None,
                    broken: None,
                }),
                witness_status: Some("ok".into()),
                highest_head: self
                    .heads
                    .iter()
                    .max_by_key(|h| h.0)
                    .map(|(seq, h)| WireHead {
                        seq: *seq,
                        entry_hash: h.clone(),
                    }),
                hashes,
            }
        }
    }

    /// Runs the comparison of a local chain of `local_len` entries (all `'a'`) against `server`.
    fn run(local_len: u64, server: &mut FakeServer) -> Comparison {
        let mut local = |seqs: &[u64]| -> Result<BTreeMap<u64, String>, ()> {
            Ok(seqs
                .iter()
                .filter(|s| **s < local_len)
                .map(|s| (*s, hash('a', *s)))
                .collect())
        };
        let mut ask = |seqs: &[u64]| -> Result<WitnessAnswer, ()> { Ok(server.answer(seqs)) };
        compare(local_len.checked_sub(1), &mut local, &mut ask).unwrap()
    }

    fn server(held: u64, fork_at: Option<u64>) -> FakeServer {
        FakeServer {
            held,
            fork_at,
            heads: Vec::new(),
            requests: Vec::new(),
        }
    }

    #[test]
    fn the_same_chain_agrees_in_one_request() {
        let comparison = run(1000, &mut server(1000, None));
        assert_eq!(comparison.outcome, Outcome::Agrees { through: Some(999) });
        assert_eq!(comparison.requests, 1);
        let empty = run(0, &mut server(0, None));
        assert_eq!(empty.outcome, Outcome::Agrees { through: None });
    }

    #[test]
    fn every_fork_point_is_found_exactly_in_logarithmically_many_requests() {
        for len in [1u64, 2, 17, 18, 100, 1000] {
            for fork_at in 0..len {
                let mut fake = server(len, Some(fork_at));
                let comparison = run(len, &mut fake);
                match comparison.outcome {
                    Outcome::Fork {
                        seq,
                        agrees_through,
                        ref local_hash,
                        ref server_hash,
                        ..
                    } => {
                        assert_eq!(seq, fork_at, "len {len}");
                        assert_eq!(agrees_through, fork_at.checked_sub(1));
                        assert_eq!(local_hash.as_deref(), Some(hash('a', seq).as_str()));
                        assert_eq!(*server_hash, hash('x', seq));
                    }
                    other => panic!("len {len}, fork at {fork_at}: {other:?}"),
                }
                assert!(
                    fake.requests
                        .iter()
                        .all(|r| r.len() as u64 <= PROBES_PER_REQUEST)
                );
            }
        }
        // A million entries: the first request, then at most five rounds of 16 probes.
        let mut fake = server(1_000_000, Some(123_457));
        let comparison = run(1_000_000, &mut fake);
        assert!(matches!(
            comparison.outcome,
            Outcome::Fork { seq: 123_457, .. }
        ));
        assert!(comparison.requests <= 6, "{} requests", comparison.requests);
    }

    #[test]
    fn a_server_that_holds_less_says_how_far_it_agrees() {
        let comparison = run(100, &mut server(60, None));
        assert_eq!(
            comparison.outcome,
            Outcome::ServerBehind {
                through: Some(59),
                local_head: 99
            }
        );
        assert_eq!(comparison.requests, 2);
        let nothing = run(100, &mut server(0, None));
        assert_eq!(
            nothing.outcome,
            Outcome::ServerBehind {
                through: None,
                local_head: 99
            }
        );
        // Less, and forked within what it holds.
        let forked = run(100, &mut server(60, Some(30)));
        assert!(matches!(
            forked.outcome,
            Outcome::Fork {
                seq: 30,
                agrees_through: Some(29),
                ..
            }
        ));
    }

    #[test]
    fn a_local_trace_shorter_than_the_witness_lost_entries() {
        let comparison = run(40, &mut server(100, None));
        assert_eq!(
            comparison.outcome,
            Outcome::LocalBehind {
                local_head: Some(39),
                agrees_through: Some(39),
                server_seq: 99
            }
        );
        // A head shown beyond the entries received counts as witnessed.
        let mut fake = server(40, None);
        fake.heads.push((70, hash('a', 70)));
        let comparison = run(50, &mut fake);
        assert!(matches!(
            comparison.outcome,
            Outcome::LocalBehind { server_seq: 70, .. }
        ));
        let gone = run(0, &mut server(10, None));
        assert!(matches!(
            gone.outcome,
            Outcome::LocalBehind {
                local_head: None,
                server_seq: 9,
                ..
            }
        ));
    }

    #[test]
    fn a_head_beyond_the_entries_received_is_compared_too() {
        // The server holds entries 0..40 and was shown head 80 of the original chain; the local
        // chain was rewritten from 60: they part between 40 and 80.
        let mut fake = server(40, None);
        fake.heads.push((80, hash('x', 80)));
        let comparison = run(100, &mut fake);
        assert_eq!(
            comparison.outcome,
            Outcome::Fork {
                seq: 80,
                agrees_through: Some(39),
                local_hash: Some(hash('a', 80)),
                server_hash: hash('x', 80),
                source: "heartbeat".into()
            }
        );
        // The same head, agreeing: witnessed up to 80, not beyond.
        let mut fake = server(40, None);
        fake.heads.push((80, hash('a', 80)));
        assert_eq!(
            run(100, &mut fake).outcome,
            Outcome::ServerBehind {
                through: Some(80),
                local_head: 99
            }
        );
    }
}
