// Syntax highlighting of policy YAML: a line-by-line tokenizer for the subset policies use
// (mappings, sequences, scalars, comments, flow lists). A full YAML parser is not needed to
// colour text: validity is the server's, which answers with line-precise errors.

export type TokenKind = 'key' | 'string' | 'number' | 'bool' | 'comment' | 'punct' | 'text';

export interface Token {
  kind: TokenKind;
  text: string;
}

function scalarKind(text: string): TokenKind {
  const t = text.trim();
  if (t === '') return 'text';
  if (/^(true|false|null|~|yes|no|on|off)$/i.test(t)) return 'bool';
  if (/^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/.test(t)) return 'number';
  if (/^(['"]).*\1$/.test(t)) return 'string';
  return 'string';
}

/** Where a comment starts (`#` at the start or after white space, outside quotes), or -1. */
export function commentStart(line: string): number {
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === '#' && (i === 0 || /\s/.test(line[i - 1] ?? ''))) {
      return i;
    }
  }
  return -1;
}

function valueTokens(text: string): Token[] {
  const out: Token[] = [];
  // Flow collections: split on their punctuation, colour the items.
  const parts = text.split(/([[\]{},])/);
  for (const part of parts) {
    if (part === '') continue;
    if (/^[[\]{},]$/.test(part)) {
      out.push({ kind: 'punct', text: part });
      continue;
    }
    const lead = part.match(/^\s*/)?.[0] ?? '';
    const trail = part.match(/\s*$/)?.[0] ?? '';
    const core = part.slice(lead.length, part.length - trail.length);
    if (lead) out.push({ kind: 'text', text: lead });
    if (core) out.push({ kind: scalarKind(core), text: core });
    if (trail && core) out.push({ kind: 'text', text: trail });
    else if (trail && !lead) out.push({ kind: 'text', text: trail });
  }
  return out;
}

/** The tokens of one line; their texts joined give the line back exactly. */
export function tokenizeLine(line: string): Token[] {
  const out: Token[] = [];
  const hash = commentStart(line);
  const body = hash >= 0 ? line.slice(0, hash) : line;
  const comment = hash >= 0 ? line.slice(hash) : '';
  let rest = body;
  const indent = rest.match(/^\s*/)?.[0] ?? '';
  if (indent) out.push({ kind: 'text', text: indent });
  rest = rest.slice(indent.length);
  // Sequence dashes.
  while (/^-(\s|$)/.test(rest)) {
    const dash = rest.match(/^-\s*/)?.[0] ?? '-';
    out.push({ kind: 'punct', text: '-' });
    if (dash.length > 1) out.push({ kind: 'text', text: dash.slice(1) });
    rest = rest.slice(dash.length);
  }
  const key = rest.match(/^("[^"]*"|'[^']*'|[^\s:#[\]{},"'][^:#]*?)(\s*)(:)(\s|$)/);
  if (key && key[1] !== undefined && key[3] !== undefined) {
    out.push({ kind: 'key', text: key[1] });
    if (key[2]) out.push({ kind: 'text', text: key[2] });
    out.push({ kind: 'punct', text: ':' });
    rest = rest.slice(key[1].length + (key[2]?.length ?? 0) + 1);
  }
  if (rest) out.push(...valueTokens(rest));
  if (comment) out.push({ kind: 'comment', text: comment });
  return out;
}

export function tokenize(text: string): Token[][] {
  return text.split('\n').map(tokenizeLine);
}
