import type { MouseEvent, ReactNode } from 'react';
import { navigate } from './hooks';
import { CHAIN_LABEL, type EntryChain } from './lib/chain';
import type { Chain } from './api/types';

/** An in-app link: a real `<a href>` (middle click, copy link), routed without reload. */
export function Link(props: { to: string; children: ReactNode; className?: string; 'aria-current'?: 'page' | undefined; title?: string }) {
  const onClick = (e: MouseEvent<HTMLAnchorElement>) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(props.to);
  };
  return (
    <a href={props.to} onClick={onClick} className={props.className} aria-current={props['aria-current']} title={props.title}>
      {props.children}
    </a>
  );
}

export function ErrorBox({ error }: { error: string | null }) {
  if (!error) return null;
  return (
    <p className="error" role="alert">
      {error}
    </p>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status">
      Loading {what}…
    </p>
  );
}

export function Badge({ tone, children, label }: { tone: 'ok' | 'warn' | 'bad' | 'neutral'; children: ReactNode; label?: string }) {
  return (
    <span className={`badge badge-${tone}`} aria-label={label} title={label}>
      {children}
    </span>
  );
}

export function statusTone(status: string): 'ok' | 'warn' | 'bad' | 'neutral' {
  if (status === 'active' || status === 'continuous' || status === 'ok' || status === 'verified') return 'ok';
  if (status === 'gap' || status === 'inactive' || status === 'pending' || status === 'unverifiable') return 'warn';
  if (status === 'broken' || status === 'forked' || status === 'rewound' || status === 'bad_checkpoint' || status === 'tampered') return 'bad';
  return 'neutral';
}

export function ChainSummary({ chain }: { chain: Chain | undefined }) {
  if (!chain) return <Badge tone="neutral">no entries</Badge>;
  let text = chain.status;
  if (chain.status === 'gap') text = `gap ${chain.gap_from ?? '?'}–${chain.gap_to ?? '?'}`;
  if (chain.status === 'broken') text = `broken at ${chain.broken_at ?? '?'} (${chain.broken_kind ?? '?'})`;
  return (
    <Badge tone={statusTone(chain.status)} label={`${chain.stream} chain: ${text}`}>
      {text}
    </Badge>
  );
}

const CHAIN_GLYPH: Record<EntryChain, string> = { verified: '✓', pending: '…', tampered: '✗', broken: '✗', unknown: '?' };

/** The per-entry chain indicator: a glyph and colour, and its meaning in words for everyone. */
export function ChainDot({ state }: { state: EntryChain }) {
  return (
    <span className={`chain chain-${state}`} role="img" aria-label={CHAIN_LABEL[state]} title={CHAIN_LABEL[state]} data-chain={state}>
      {CHAIN_GLYPH[state]}
    </span>
  );
}

export function PageHeader({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <header className="page-header">
      <h1 tabIndex={-1} id="page-title">
        {title}
      </h1>
      {children ? <div className="page-actions">{children}</div> : null}
    </header>
  );
}

export function TableWrap({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="table-wrap" role="region" aria-label={label} tabIndex={0}>
      {children}
    </div>
  );
}
