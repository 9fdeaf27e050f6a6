// The risk heat map: decisions per risk level, runtime and UTC hour (`GET /v1/risk/hourly`)
// laid out as a grid, one row per runtime, one column per hour of the range, each cell coloured
// by the highest level it holds.

import type { RiskHour } from '../api/types';

export const LEVELS = ['critical', 'high', 'medium', 'low', 'none', 'unclassified'] as const;
export type Level = (typeof LEVELS)[number];

export interface Cell {
  hour: string;
  total: number;
  /** The highest level with a decision, or null for an empty cell. */
  top: Level | null;
  counts: Record<Level, number>;
}

export interface Grid {
  hours: string[];
  rows: { runtimeId: string; cells: Cell[] }[];
}

const HOUR_MS = 3_600_000;

/** The hours (RFC 3339, UTC, on the hour) of `[from, to)`. */
export function hoursOf(from: Date, to: Date): string[] {
  const out: string[] = [];
  let t = Math.floor(from.getTime() / HOUR_MS) * HOUR_MS;
  for (; t < to.getTime(); t += HOUR_MS) out.push(new Date(t).toISOString().replace('.000Z', 'Z'));
  return out;
}

function hourKey(hour: string): number {
  return Math.floor(Date.parse(hour) / HOUR_MS);
}

function emptyCounts(): Record<Level, number> {
  return { critical: 0, high: 0, medium: 0, low: 0, none: 0, unclassified: 0 };
}

export function buildGrid(rows: readonly RiskHour[], from: Date, to: Date): Grid {
  const hours = hoursOf(from, to);
  const index = new Map(hours.map((h, i) => [hourKey(h), i]));
  const byRuntime = new Map<string, Cell[]>();
  for (const row of rows) {
    const column = index.get(hourKey(row.hour));
    if (column === undefined) continue;
    let cells = byRuntime.get(row.runtime_id);
    if (!cells) {
      cells = hours.map((hour) => ({ hour, total: 0, top: null, counts: emptyCounts() }));
      byRuntime.set(row.runtime_id, cells);
    }
    const cell = cells[column];
    if (!cell) continue;
    for (const level of LEVELS) {
      cell.counts[level] += row[level];
      cell.total += row[level];
    }
    cell.top = LEVELS.find((level) => cell.counts[level] > 0) ?? null;
  }
  return {
    hours,
    rows: [...byRuntime.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([runtimeId, cells]) => ({ runtimeId, cells })),
  };
}

/** The text a cell says to a screen reader and in its tooltip. */
export function describeCell(cell: Cell): string {
  if (cell.total === 0) return `${cell.hour}: no decisions`;
  const parts = LEVELS.filter((l) => cell.counts[l] > 0).map((l) => `${cell.counts[l]} ${l}`);
  return `${cell.hour}: ${cell.total} decisions (${parts.join(', ')})`;
}
