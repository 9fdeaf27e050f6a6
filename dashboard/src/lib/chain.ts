// The per-entry chain indicator of the audit trail, from what the server says of the entry
// (`hash_ok`: it re-derived the same hash) and of its runtime's chain (`next_seq`: every entry
// below it is held and linked; `broken_at`: the first bad seq; the gap range).

import type { Chain } from '../api/types';

export type EntryChain =
  /** Hash re-derived, and linked into the contiguous verified prefix: green. */
  | 'verified'
  /** Held, hash good, but beyond a gap: not linked yet. */
  | 'pending'
  /** The entry's own hash does not match its content. */
  | 'tampered'
  /** At or after the chain's first bad link. */
  | 'broken'
  /** The runtime's chain is not known to the dashboard (yet). */
  | 'unknown';

export function entryChain(seq: number, hashOk: boolean, chain: Chain | undefined): EntryChain {
  if (!hashOk) return 'tampered';
  if (!chain) return 'unknown';
  if (chain.status === 'broken' && chain.broken_at !== null && seq >= chain.broken_at) return 'broken';
  if (seq < chain.next_seq) return 'verified';
  return 'pending';
}

export const CHAIN_LABEL: Record<EntryChain, string> = {
  verified: 'Chain verified',
  pending: 'Beyond a gap, not linked yet',
  tampered: 'Hash mismatch: content changed after sealing',
  broken: 'After the chain broke',
  unknown: 'Chain status unknown',
};

export interface Marker {
  kind: 'gap' | 'break';
  runtimeId: string;
  /** The marker goes before the row at this index. */
  beforeIndex: number;
  text: string;
}

/**
 * Gap and break markers for a newest-first list of entries: a break marker before the chain's
 * first bad seq, and a gap marker where consecutive rows of one runtime skip seqs inside the
 * chain's known gap (rows filtered out by a search are not gaps, so only the server's gap
 * range counts).
 */
export function markers(
  rows: readonly { runtime_id: string; seq: number }[],
  chains: ReadonlyMap<string, Chain>,
): Marker[] {
  const out: Marker[] = [];
  const lastSeen = new Map<string, number>();
  rows.forEach((row, index) => {
    const chain = chains.get(row.runtime_id);
    const above = lastSeen.get(row.runtime_id);
    if (chain && chain.status === 'gap' && chain.gap_from !== null && chain.gap_to !== null) {
      // Newest first: the row above has the higher seq. The gap lies between them.
      if (above !== undefined && above > chain.gap_to && row.seq < chain.gap_from) {
        out.push({
          kind: 'gap',
          runtimeId: row.runtime_id,
          beforeIndex: index,
          text: `Gap: seq ${chain.gap_from}–${chain.gap_to} of this runtime have not reached the server`,
        });
      }
    }
    if (chain && chain.status === 'broken' && chain.broken_at !== null) {
      if (above !== undefined && above >= chain.broken_at && row.seq < chain.broken_at) {
        out.push({
          kind: 'break',
          runtimeId: row.runtime_id,
          beforeIndex: index,
          text: `Chain broken at seq ${chain.broken_at} (${chain.broken_kind ?? 'unknown'}): entries above are not trusted`,
        });
      }
    }
    lastSeen.set(row.runtime_id, row.seq);
  });
  return out;
}
