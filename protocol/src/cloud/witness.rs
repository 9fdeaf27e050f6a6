//! `POST /v1/witness`: what the server witnessed of the calling runtime's own chain, so that a
//! local trace can be compared with it (`atlasbridge trace integrity-check --against-cloud`).
//!
//! The runtime is the one the bearer token was issued to: a runtime asks about itself only,
//! never about another. The answer holds hashes, never entries: the comparison needs no more.

use serde::{Deserialize, Serialize};

use super::messages::{Stream, WireHead};

/// Seqs one query may name at most.
pub const MAX_QUERY_SEQS: usize = 256;
/// Entries the ranges of one query may span at most, together.
pub const MAX_QUERY_RANGE_ENTRIES: u64 = 1000;

/// An inclusive range of seqs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeqRange {
    /// The first seq.
    pub from_seq: u64,
    /// The last seq (inclusive).
    pub to_seq: u64,
}

impl SeqRange {
    /// How many seqs it spans; 0 when it runs backwards.
    pub fn len(self) -> u64 {
        if self.to_seq < self.from_seq {
            0
        } else {
            self.to_seq - self.from_seq + 1
        }
    }

    /// Whether it spans no seq.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// The query: which stream, and at which seqs the witnessed hashes are wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessQuery {
    /// `trace` or `audit`.
    pub stream: Stream,
    /// Single seqs, at most [`MAX_QUERY_SEQS`].
    #[serde(default)]
    pub seqs: Vec<u64>,
    /// Ranges, spanning at most [`MAX_QUERY_RANGE_ENTRIES`] together.
    #[serde(default)]
    pub ranges: Vec<SeqRange>,
}

/// Why a query is refused before anything is looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// More than [`MAX_QUERY_SEQS`] seqs.
    #[error("at most {MAX_QUERY_SEQS} seqs per query, got {0}")]
    TooManySeqs(usize),
    /// The ranges span more than [`MAX_QUERY_RANGE_ENTRIES`].
    #[error("the ranges of a query span at most {MAX_QUERY_RANGE_ENTRIES} seqs, got {0}")]
    RangesTooLong(u64),
    /// A range whose end is before its start.
    #[error("range {0}..={1} runs backwards")]
    BackwardRange(u64, u64),
    /// A seq the server cannot hold (above `i64::MAX`).
    #[error("seq {0} is out of range")]
    OutOfRange(u64),
}

impl QueryError {
    /// The member of the query at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::TooManySeqs(_) | Self::OutOfRange(_) => "seqs",
            Self::RangesTooLong(_) | Self::BackwardRange(..) => "ranges",
        }
    }
}

impl WitnessQuery {
    /// Every seq the query names, sorted and without repeats, once it is within the limits.
    pub fn seqs_wanted(&self) -> Result<Vec<u64>, QueryError> {
        if self.seqs.len() > MAX_QUERY_SEQS {
            return Err(QueryError::TooManySeqs(self.seqs.len()));
        }
        let mut span = 0u64;
        for range in &self.ranges {
            if range.to_seq < range.from_seq {
                return Err(QueryError::BackwardRange(range.from_seq, range.to_seq));
            }
            span = span.saturating_add(range.len());
        }
        if span > MAX_QUERY_RANGE_ENTRIES {
            return Err(QueryError::RangesTooLong(span));
        }
        let mut wanted: Vec<u64> = self
            .seqs
            .iter()
            .copied()
            .chain(
                self.ranges
                    .iter()
                    .flat_map(|range| range.from_seq..=range.to_seq),
            )
            .collect();
        if let Some(seq) = wanted.iter().find(|seq| i64::try_from(**seq).is_err()) {
            return Err(QueryError::OutOfRange(*seq));
        }
        wanted.sort_unstable();
        wanted.dedup();
        Ok(wanted)
    }
}

/// A hash the server holds for a seq: of the entry it received, or of a head it was shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessedHash {
    /// The seq.
    pub seq: u64,
    /// The hash the server holds for it.
    pub entry_hash: String,
    /// `entry` (the entry as first received), or where a head came from: `hello`,
    /// `heartbeat` or `checkpoint`.
    pub source: String,
}

/// Where the server's copy of a chain is broken: the first bad seq and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenAt {
    /// The first bad seq.
    pub seq: u64,
    /// `hash_mismatch`, `prev_mismatch`, `fork`, `rewound` or `malformed`.
    pub kind: String,
}

/// The server's copy of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessedChain {
    /// `continuous`, `gap` or `broken`.
    pub status: String,
    /// Entries `0..next_seq` are all held.
    pub next_seq: u64,
    /// The highest seq held (beyond `next_seq - 1` while there is a gap).
    pub max_seq: Option<u64>,
    /// The missing range, while there is one.
    pub gap: Option<SeqRange>,
    /// The first bad seq, once the chain is broken (it stays).
    pub broken: Option<BrokenAt>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessAnswer {
    /// The runtime asked about: the token's.
    pub runtime_id: String,
    /// The stream asked about.
    pub stream: Stream,
    /// The server's copy of the chain; `null` when it holds nothing of this runtime.
    pub chain: Option<WitnessedChain>,
    /// The runtime's witness verdict (`ok`, `rewound`, `forked`, `bad_checkpoint`); `null`
    /// when the runtime is unknown.
    pub witness_status: Option<String>,
    /// The highest head the runtime showed the witness, if any.
    pub highest_head: Option<WireHead>,
    /// Every hash held at the seqs asked for, by seq (an entry and heads may share one).
    pub hashes: Vec<WitnessedHash>,
}

impl WitnessAnswer {
    /// The hashes held at `seq`.
    pub fn at(&self, seq: u64) -> impl Iterator<Item = &WitnessedHash> {
        self.hashes.iter().filter(move |hash| hash.seq == seq)
    }

    /// The highest seq of which the server holds anything: an entry (contiguous or beyond a
    /// gap) or a head.
    pub fn highest_seq(&self) -> Option<u64> {
        let chain = self.chain.as_ref();
        let held = chain.and_then(|c| c.next_seq.checked_sub(1));
        let max = chain.and_then(|c| c.max_seq);
        let head = self.highest_head.as_ref().map(|h| h.seq);
        [held, max, head].into_iter().flatten().max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(seqs: Vec<u64>, ranges: Vec<SeqRange>) -> WitnessQuery {
        WitnessQuery {
            stream: Stream::Trace,
            seqs,
            ranges,
        }
    }

    #[test]
    fn a_query_names_its_seqs_within_the_limits() {
        let wanted = query(
            vec![9, 2, 9],
            vec![SeqRange {
                from_seq: 4,
                to_seq: 6,
            }],
        );
        assert_eq!(wanted.seqs_wanted(), Ok(vec![2, 4, 5, 6, 9]));
        let too_many = query((0..=MAX_QUERY_SEQS as u64).collect(), vec![]);
        assert_eq!(
            too_many.seqs_wanted(),
            Err(QueryError::TooManySeqs(MAX_QUERY_SEQS + 1))
        );
        let long = query(
            vec![],
            vec![SeqRange {
                from_seq: 0,
                to_seq: MAX_QUERY_RANGE_ENTRIES,
            }],
        );
        assert_eq!(
            long.seqs_wanted(),
            Err(QueryError::RangesTooLong(MAX_QUERY_RANGE_ENTRIES + 1))
        );
        let backwards = query(
            vec![],
            vec![SeqRange {
                from_seq: 5,
                to_seq: 4,
            }],
        );
        assert_eq!(
            backwards.seqs_wanted(),
            Err(QueryError::BackwardRange(5, 4))
        );
        let huge = query(vec![u64::MAX], vec![]);
        assert_eq!(huge.seqs_wanted(), Err(QueryError::OutOfRange(u64::MAX)));
    }

    #[test]
    fn unknown_members_are_refused_and_the_highest_seq_counts_every_kind_of_evidence() {
        let error = serde_json::from_str::<WitnessQuery>(r#"{"stream":"trace","sqes":[1]}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("sqes"), "{error}");
        let answer = WitnessAnswer {
            runtime_id: "ed25519:x".into(),
            stream: Stream::Trace,
            chain: Some(WitnessedChain {
                status: "gap".into(),
                next_seq: 5,
                max_seq: Some(9),
                gap: Some(SeqRange {
                    from_seq: 5,
                    to_seq: 7,
                }),
                broken: None,
            }),
            witness_status: Some("ok".into()),
            highest_head: Some(WireHead {
                seq: 12,
                entry_hash: "h".into(),
            }),
            hashes: vec![],
        };
        assert_eq!(answer.highest_seq(), Some(12));
        let nothing = WitnessAnswer {
            chain: None,
            highest_head: None,
            ..answer
        };
        assert_eq!(nothing.highest_seq(), None);
    }
}
