import { describe, expect, it } from 'vitest';
import type { RiskHour, Session } from '../api/types';
import { csvCell, toCsv } from './csv';
import { offsetOf, problemsByLine, starterPolicy } from './editor';
import { field } from './entry';
import { fleetEvent, fromAudit } from './events';
import { ago, isoToLocalInput, localInputToIso, shortId, timeText } from './format';
import { buildGrid, describeCell, hoursOf } from './heatmap';
import { addDecision, pushRecent, rateText, statsFromSessions, utcMidnight } from './stats';

describe('CSV export', () => {
  it('quotes what needs it and neutralises spreadsheet formulas', () => {
    expect(csvCell('plain')).toBe('plain');
    expect(csvCell('a,b')).toBe('"a,b"');
    expect(csvCell('say "hi"')).toBe('"say ""hi"""');
    expect(csvCell('line\nbreak')).toBe('"line\nbreak"');
    expect(csvCell('=cmd()')).toBe("'=cmd()");
    expect(csvCell('@SUM(A1)')).toBe("'@SUM(A1)");
    expect(csvCell(null)).toBe('');
    expect(csvCell(12)).toBe('12');
    expect(csvCell(['a', 'b'])).toBe('"[""a"",""b""]"');
    expect(toCsv(['a', 'b'], [{ a: 1, b: 'x,y' }, { a: 2 }])).toBe('a,b\r\n1,"x,y"\r\n2,\r\n');
  });
});

describe('the heat map', () => {
  const from = new Date('2026-11-27T00:00:00Z');
  const to = new Date('2026-11-27T03:00:00Z');
  const row = (runtime_id: string, hour: string, counts: Partial<RiskHour>): RiskHour => ({
    runtime_id,
    hour,
    none: 0,
    low: 0,
    medium: 0,
    high: 0,
    critical: 0,
    unclassified: 0,
    ...counts,
  });

  it('lays runtimes by hours, coloured by the highest level', () => {
    expect(hoursOf(from, to)).toEqual(['2026-11-27T00:00:00Z', '2026-11-27T01:00:00Z', '2026-11-27T02:00:00Z']);
    const grid = buildGrid(
      [
        row('b', '2026-11-27T01:00:00Z', { low: 2, high: 1 }),
        row('a', '2026-11-27T00:00:00+00:00', { none: 3 }),
        row('a', '2026-11-26T23:00:00Z', { critical: 9 }),
      ],
      from,
      to,
    );
    expect(grid.rows.map((r) => r.runtimeId)).toEqual(['a', 'b']);
    expect(grid.rows[0]!.cells.map((c) => c.top)).toEqual(['none', null, null]);
    expect(grid.rows[1]!.cells[1]).toMatchObject({ total: 3, top: 'high' });
    expect(describeCell(grid.rows[1]!.cells[1]!)).toBe('2026-11-27T01:00:00Z: 3 decisions (1 high, 2 low)');
    expect(describeCell(grid.rows[1]!.cells[0]!)).toBe('2026-11-27T00:00:00Z: no decisions');
  });
});

describe("the day's figures", () => {
  const session = (actions: Record<string, number>): Session => ({
    runtime_id: 'r',
    session_id: 's',
    agent_id: null,
    first_at: '',
    last_at: '',
    decisions: 0,
    actions,
    risks: {},
  });

  it('counts decisions and escalations, and adds live ones of the day only', () => {
    const since = utcMidnight(new Date('2026-11-27T15:04:05Z'));
    expect(since.toISOString()).toBe('2026-11-27T00:00:00.000Z');
    let stats = statsFromSessions(since, [session({ auto_reply: 6, require_human: 2 }), session({ deny: 2 })], true);
    expect(stats).toMatchObject({ decisions: 10, escalations: 2 });
    expect(rateText(stats)).toBe('20 %');
    const event = { runtime_id: 'r', seq: 1, entry_id: 'e', session_id: 's', agent_id: null, risk: null, hash_ok: true };
    stats = addDecision(stats, { ...event, occurred_at: '2026-11-27T10:00:00Z', action: 'require_human' });
    expect(stats).toMatchObject({ decisions: 11, escalations: 3 });
    stats = addDecision(stats, { ...event, occurred_at: '2026-11-26T23:59:59Z', action: 'require_human' });
    expect(stats).toMatchObject({ decisions: 11, escalations: 3 });
    expect(rateText(statsFromSessions(since, [], true))).toBe('—');
    expect(rateText({ ...stats, decisions: 400, escalations: 3 })).toBe('0.8 %');
  });

  it('keeps the newest events, each once', () => {
    let list: { runtime_id: string; seq: number }[] = [];
    for (const seq of [1, 2, 3, 3, 4]) list = pushRecent(list, { runtime_id: 'r', seq }, 3);
    expect(list.map((x) => x.seq)).toEqual([4, 3, 2]);
  });
});

describe('the editor', () => {
  it('groups problems by line and finds a line and column in the text', () => {
    const problems = [
      { line: 7, column: 3, field: 'a', message: 'x' },
      { line: 7, column: 9, field: 'b', message: 'y' },
      { line: 0, column: 0, field: '(root)', message: 'z' },
    ];
    const by = problemsByLine(problems);
    expect(by.get(7)).toHaveLength(2);
    expect(by.get(0)).toHaveLength(1);
    const text = 'ab\ncdef\ng';
    expect(offsetOf(text, 1, 1)).toBe(0);
    expect(offsetOf(text, 2, 3)).toBe(5);
    expect(offsetOf(text, 2, 99)).toBe(7);
    expect(offsetOf(text, 9, 1)).toBe(8);
  });

  it('starts a policy that names itself', () => {
    expect(starterPolicy('ops')).toContain('\nname: ops\n');
    expect(starterPolicy('a: b')).toContain('\nname: "a: b"\n');
  });
});

describe('formatting', () => {
  it('shows times in UTC and ids short', () => {
    expect(timeText('2026-11-27T08:01:02.123456Z')).toBe('2026-11-27 08:01:02 UTC');
    expect(timeText(null)).toBe('—');
    expect(shortId('ed25519:ABCDEFGHIJKLMNOP', 4)).toBe('ed25519:ABCD…');
    expect(shortId('short')).toBe('short');
    const now = Date.parse('2026-11-27T10:00:00Z');
    expect(ago('2026-11-27T09:59:30Z', now)).toBe('30 s ago');
    expect(ago('2026-11-27T07:00:00Z', now)).toBe('3 h ago');
    expect(localInputToIso('2026-11-27T08:30')).toBe('2026-11-27T08:30:00.000Z');
    expect(localInputToIso('')).toBe('');
    expect(isoToLocalInput('2026-11-27T08:30:00Z')).toBe('2026-11-27T08:30');
  });

  it('reads entry fields by name only, as text', () => {
    const entry = { a: 'x', n: 3, list: ['p', 4, 'q'], obj: { deep: 1 } };
    expect(field(entry, 'a')).toBe('x');
    expect(field(entry, 'n')).toBe('3');
    expect(field(entry, 'list')).toBe('p, q');
    expect(field(entry, 'obj')).toBe('');
    expect(field(entry, 'missing')).toBe('');
  });
});

describe('fleet events', () => {
  const at = '2026-11-27T08:00:00Z';
  it('tells runtime, chain and policy changes in one line each', () => {
    expect(fleetEvent({ kind: 'runtime_status', payload: { runtime_id: 'r', change: 'connected', witness_status: 'ok' } }, at)).toMatchObject({
      text: 'connected',
      tone: 'ok',
      runtimeId: 'r',
    });
    expect(fleetEvent({ kind: 'runtime_status', payload: { runtime_id: 'r', change: 'flagged', witness_status: 'forked' } }, at)).toMatchObject({
      text: 'flagged (witness forked)',
      tone: 'bad',
    });
    expect(
      fleetEvent(
        { kind: 'chain_status', payload: { runtime_id: 'r', stream: 'trace', status: 'gap', gap_from: 4, gap_to: 6, broken_at: null, broken_kind: null } },
        at,
      ),
    ).toMatchObject({ text: 'trace chain gap (seq 4–6 missing)', tone: 'warn' });
    expect(fleetEvent({ kind: 'policy', payload: { change: 'version_uploaded', name: 'p', version: '2' } }, at)).toMatchObject({ text: 'p v2 version uploaded' });
    expect(fleetEvent({ kind: 'decision', payload: { runtime_id: 'r', seq: 1, entry_id: 'e', occurred_at: at, session_id: null, agent_id: null, action: null, risk: null, hash_ok: true } }, at)).toBeNull();
  });

  it("shows a runtime's audit event by its type, red when its hash was wrong", () => {
    const e = { runtime_id: 'r', seq: 3, entry_id: 'e', occurred_at: at, event_type: 'cloud_policy_applied', hash_ok: false, entry: {} };
    expect(fromAudit(e)).toMatchObject({ key: 'audit/r/3', text: 'cloud_policy_applied', tone: 'bad' });
  });
});
