// The policy editor's logic: which lines carry problems, and the caret offset of a line.

import type { PolicyProblem } from '../api/types';

/** Problems by line (1-based); problems without a place (line 0) are under 0. */
export function problemsByLine(problems: readonly PolicyProblem[]): Map<number, PolicyProblem[]> {
  const out = new Map<number, PolicyProblem[]>();
  for (const p of problems) {
    const list = out.get(p.line) ?? [];
    list.push(p);
    out.set(p.line, list);
  }
  return out;
}

/** The character offset of `line` (1-based) and `column` (1-based, in characters) in `text`. */
export function offsetOf(text: string, line: number, column: number): number {
  const lines = text.split('\n');
  // A line past the end is the last line: the caret goes there rather than nowhere.
  const index = Math.max(0, Math.min(line - 1, lines.length - 1));
  let offset = 0;
  for (let i = 0; i < index; i++) offset += (lines[i]?.length ?? 0) + 1;
  const current = lines[index] ?? '';
  return offset + Math.max(0, Math.min(column - 1, current.length));
}

/** The first version of a new policy: valid, and asking a person for everything. */
export function starterPolicy(name: string): string {
  const quoted = /^[A-Za-z0-9_.-]+$/.test(name) ? name : JSON.stringify(name);
  return `policy_version: "1"
name: ${quoted}
autonomy_mode: full
rules:
  - id: confident-yes
    match:
      prompt_type: [yes_no]
      min_confidence: high
    action:
      type: require_human
`;
}
