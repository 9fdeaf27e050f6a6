// The fleet overview's "last fleet events": the runtimes' own audit events (from REST) and the
// live stream's changes (runtimes connecting, chains changing, policies moving), one line each.

import type { AuditEvent, LiveEvent } from '../api/types';

export interface FleetEvent {
  /** Identity, so an event is shown once and its slot gets new nodes. */
  key: string;
  kind: string;
  label: string;
  tone: 'ok' | 'warn' | 'bad' | 'neutral';
  text: string;
  runtimeId: string | null;
  at: string;
}

export function fromAudit(e: AuditEvent): FleetEvent {
  return {
    key: `audit/${e.runtime_id}/${e.seq}`,
    kind: 'audit',
    label: 'audit',
    tone: e.hash_ok ? 'neutral' : 'bad',
    text: e.event_type ?? 'event',
    runtimeId: e.runtime_id,
    at: e.occurred_at,
  };
}

/** A live event as a line, or null for those the overview shows elsewhere (decisions). */
export function fleetEvent(event: LiveEvent, at: string): FleetEvent | null {
  switch (event.kind) {
    case 'runtime_status': {
      const { runtime_id, change, witness_status } = event.payload;
      const tone = change === 'connected' ? 'ok' : change === 'flagged' ? 'bad' : 'warn';
      const text = change === 'flagged' ? `flagged (witness ${witness_status})` : change;
      return { key: `rs/${runtime_id}/${change}/${at}`, kind: 'runtime_status', label: 'runtime', tone, text, runtimeId: runtime_id, at };
    }
    case 'chain_status': {
      const p = event.payload;
      const detail =
        p.status === 'gap' ? ` (seq ${p.gap_from ?? '?'}–${p.gap_to ?? '?'} missing)` : p.status === 'broken' ? ` at seq ${p.broken_at ?? '?'} (${p.broken_kind ?? '?'})` : '';
      const tone = p.status === 'continuous' ? 'ok' : p.status === 'gap' ? 'warn' : 'bad';
      return { key: `cs/${p.runtime_id}/${p.stream}/${p.status}/${at}`, kind: 'chain_status', label: 'chain', tone, text: `${p.stream} chain ${p.status}${detail}`, runtimeId: p.runtime_id, at };
    }
    case 'policy': {
      const p = event.payload;
      const version = p.version ? ` v${p.version}` : '';
      return { key: `p/${p.name}/${p.change}/${p.version ?? ''}/${at}`, kind: 'policy', label: 'policy', tone: 'neutral', text: `${p.name}${version} ${p.change.replace('_', ' ')}`, runtimeId: null, at };
    }
    case 'runtime_policy': {
      const p = event.payload;
      return { key: `rp/${p.runtime_id}/${p.policy_hash}/${at}`, kind: 'runtime_policy', label: 'policy', tone: 'ok', text: `loaded ${p.name}`, runtimeId: p.runtime_id, at };
    }
    default:
      return null;
  }
}
