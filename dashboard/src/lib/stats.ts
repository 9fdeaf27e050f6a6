// The fleet overview's figures: decisions today and the escalation rate (decisions whose action
// asked a person, `require_human`, over all), from the sessions' per-action counts, kept up to
// date by live decisions.

import type { DecisionEvent, Session } from '../api/types';

export interface DayStats {
  /** UTC midnight the figures count from (RFC 3339). */
  since: string;
  decisions: number;
  escalations: number;
  /** Whether every session of the day was counted (false when the listing was cut short). */
  complete: boolean;
}

export const ESCALATING_ACTIONS: ReadonlySet<string> = new Set(['require_human']);

export function utcMidnight(now: Date): Date {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
}

export function statsFromSessions(since: Date, sessions: readonly Session[], complete: boolean): DayStats {
  let decisions = 0;
  let escalations = 0;
  for (const session of sessions) {
    for (const [action, count] of Object.entries(session.actions)) {
      decisions += count;
      if (ESCALATING_ACTIONS.has(action)) escalations += count;
    }
  }
  return { since: since.toISOString(), decisions, escalations, complete };
}

export function addDecision(stats: DayStats, event: DecisionEvent): DayStats {
  if (Date.parse(event.occurred_at) < Date.parse(stats.since)) return stats;
  return {
    ...stats,
    decisions: stats.decisions + 1,
    escalations: stats.escalations + (event.action && ESCALATING_ACTIONS.has(event.action) ? 1 : 0),
  };
}

/** The rate as people read it: "12.5 %", or "—" with nothing decided. */
export function rateText(stats: DayStats): string {
  if (stats.decisions === 0) return '—';
  const rate = (100 * stats.escalations) / stats.decisions;
  return `${rate.toFixed(rate < 10 ? 1 : 0)} %`;
}

/** The newest `size` events first, each kept once (by runtime and seq). */
export function pushRecent<T extends { runtime_id: string; seq: number }>(list: readonly T[], item: T, size: number): T[] {
  if (list.some((x) => x.runtime_id === item.runtime_id && x.seq === item.seq)) return [...list];
  return [item, ...list].slice(0, size);
}
