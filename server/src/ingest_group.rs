//! Batches a runtime sent back to back, stored together.
//!
//! A runtime keeps many entries in flight (the daemon: `buffer_events`, 10,000), and a batch
//! carries what fits in one 64 KiB message (some 70 decisions), so several batches usually wait
//! in the socket while one is being stored. The channel takes those that are already there
//! (never waiting for more) into one transaction: one COMMIT, so one WAL flush and one pass
//! through the NOTIFY queue's commit lock, serves them all, and batches that continue each
//! other are joined so that the chain is locked, checked and updated once. Every batch is still
//! re-verified entry by entry, and acknowledged only after that COMMIT.

use atlasbridge_protocol::cloud::messages::AuditBatch;

/// Batches stored in one transaction at most: bounds the transaction and how long the first
/// batch of a group waits for its ack.
pub const MAX_BATCHES: usize = 32;

/// Joins each run of batches of one stream that continue each other (the next `from_seq` is
/// the previous `to_seq + 1`, and each holds exactly its range) into one batch, keeping the
/// order. Batches that do not fit that shape stay as they are, so a malformed entry is still
/// placed by its own batch's `from_seq`.
pub fn merge(batches: Vec<AuditBatch>) -> Vec<AuditBatch> {
    let mut merged: Vec<AuditBatch> = Vec::with_capacity(batches.len());
    for batch in batches {
        if let Some(last) = merged.last_mut()
            && holds_its_range(last)
            && holds_its_range(&batch)
            && last.stream == batch.stream
            && last.to_seq.checked_add(1) == Some(batch.from_seq)
        {
            last.to_seq = batch.to_seq;
            last.entries.extend(batch.entries);
            continue;
        }
        merged.push(batch);
    }
    merged
}

fn holds_its_range(batch: &AuditBatch) -> bool {
    batch
        .to_seq
        .checked_sub(batch.from_seq)
        .and_then(|span| span.checked_add(1))
        == Some(batch.entries.len() as u64)
}

#[cfg(test)]
mod tests {
    use atlasbridge_protocol::cloud::messages::Stream;
    use serde_json::json;

    use super::*;

    fn batch(stream: Stream, from: u64, to: u64) -> AuditBatch {
        AuditBatch {
            stream,
            from_seq: from,
            to_seq: to,
            entries: (from..=to).map(|seq| json!({"seq": seq})).collect(),
        }
    }

    fn shape(batches: &[AuditBatch]) -> Vec<(Stream, u64, u64, usize)> {
        batches
            .iter()
            .map(|b| (b.stream, b.from_seq, b.to_seq, b.entries.len()))
            .collect()
    }

    #[test]
    fn batches_that_continue_each_other_are_joined_in_order() {
        let merged = merge(vec![
            batch(Stream::Trace, 0, 9),
            batch(Stream::Trace, 10, 19),
            batch(Stream::Trace, 20, 20),
        ]);
        assert_eq!(shape(&merged), [(Stream::Trace, 0, 20, 21)]);
        let seqs: Vec<u64> = merged[0]
            .entries
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        assert_eq!(seqs, (0..=20).collect::<Vec<_>>());
    }

    #[test]
    fn gaps_overlaps_other_streams_and_odd_shapes_stay_apart() {
        let mut short = batch(Stream::Trace, 30, 39);
        short.entries.pop();
        let merged = merge(vec![
            batch(Stream::Trace, 0, 9),
            // A gap.
            batch(Stream::Trace, 11, 19),
            // An overlap (a resend).
            batch(Stream::Trace, 15, 24),
            // The other stream between two that would continue each other.
            batch(Stream::Audit, 0, 4),
            batch(Stream::Trace, 25, 29),
            // Fewer entries than its range says.
            short,
            batch(Stream::Trace, 40, 49),
        ]);
        assert_eq!(
            shape(&merged),
            [
                (Stream::Trace, 0, 9, 10),
                (Stream::Trace, 11, 19, 9),
                (Stream::Trace, 15, 24, 10),
                (Stream::Audit, 0, 4, 5),
                (Stream::Trace, 25, 29, 5),
                (Stream::Trace, 30, 39, 9),
                (Stream::Trace, 40, 49, 10),
            ]
        );
    }

    #[test]
    fn nothing_and_one_batch_stay_as_they_are() {
        assert!(merge(Vec::new()).is_empty());
        assert_eq!(
            shape(&merge(vec![batch(Stream::Audit, 3, 3)])),
            [(Stream::Audit, 3, 3, 1)]
        );
    }
}
