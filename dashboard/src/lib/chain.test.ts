import { describe, expect, it } from 'vitest';
import type { Chain } from '../api/types';
import { entryChain, markers } from './chain';

function chain(over: Partial<Chain>): Chain {
  return {
    stream: 'trace',
    status: 'continuous',
    next_seq: 10,
    max_seq: 9,
    gap_from: null,
    gap_to: null,
    broken_at: null,
    broken_kind: null,
    broken_detail: null,
    updated_at: '2026-11-27T00:00:00Z',
    ...over,
  };
}

describe('the chain indicator of an entry', () => {
  it('is green only for a good hash inside the linked prefix', () => {
    const c = chain({});
    expect(entryChain(0, true, c)).toBe('verified');
    expect(entryChain(9, true, c)).toBe('verified');
    expect(entryChain(10, true, c)).toBe('pending');
    expect(entryChain(3, false, c)).toBe('tampered');
    expect(entryChain(3, true, undefined)).toBe('unknown');
  });

  it('marks entries beyond a gap as not linked yet', () => {
    const c = chain({ status: 'gap', next_seq: 5, gap_from: 5, gap_to: 7, max_seq: 12 });
    expect(entryChain(4, true, c)).toBe('verified');
    expect(entryChain(8, true, c)).toBe('pending');
  });

  it('marks everything from the first bad seq of a broken chain', () => {
    const c = chain({ status: 'broken', next_seq: 20, broken_at: 6, broken_kind: 'prev_mismatch' });
    expect(entryChain(5, true, c)).toBe('verified');
    expect(entryChain(6, true, c)).toBe('broken');
    expect(entryChain(19, true, c)).toBe('broken');
  });
});

describe('gap and break markers', () => {
  it('puts a gap marker between the rows around the missing range, per runtime', () => {
    const chains = new Map([
      ['a', chain({ status: 'gap', next_seq: 5, gap_from: 5, gap_to: 7 })],
      ['b', chain({})],
    ]);
    const rows = [
      { runtime_id: 'a', seq: 9 },
      { runtime_id: 'b', seq: 3 },
      { runtime_id: 'a', seq: 8 },
      { runtime_id: 'a', seq: 4 },
      { runtime_id: 'a', seq: 3 },
    ];
    const found = markers(rows, chains);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ kind: 'gap', runtimeId: 'a', beforeIndex: 3 });
    expect(found[0]!.text).toContain('5–7');
  });

  it('puts a break marker below the first bad entry, and none for filtered-out rows', () => {
    const chains = new Map([['a', chain({ status: 'broken', broken_at: 6, broken_kind: 'hash_mismatch', next_seq: 9 })]]);
    const found = markers(
      [
        { runtime_id: 'a', seq: 8 },
        { runtime_id: 'a', seq: 6 },
        { runtime_id: 'a', seq: 2 },
      ],
      chains,
    );
    expect(found).toEqual([expect.objectContaining({ kind: 'break', beforeIndex: 2 })]);
    // A continuous chain with rows skipped by a search: no marker.
    expect(markers([{ runtime_id: 'a', seq: 9 }, { runtime_id: 'a', seq: 1 }], new Map([['a', chain({})]]))).toEqual([]);
  });
});
