// Fields of a trace entry the dashboard shows. The server holds metadata only (prompt text
// never leaves a runtime); the dashboard still reads named fields, never the entry wholesale,
// so nothing a runtime adds later is shown unreviewed.

import type { Entry } from '../api/types';

export function field(entry: Entry, name: string): string {
  const value = entry[name];
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return value.filter((v) => typeof v === 'string').join(', ');
  return '';
}

/** The fields of a decision shown in the audit trail, the timeline and the exports. */
export const DECISION_FIELDS = [
  'prompt_type',
  'confidence',
  'policy_name',
  'policy_version',
  'policy_hash',
  'matched_rule',
  'autonomy_mode',
  'policy_action',
  'action_taken',
  'reply_value',
  'risk_level',
  'risk_reasons',
  'escalation_status',
  'human_actor',
  'branch',
  'entry_hash',
  'prev_hash',
] as const;
