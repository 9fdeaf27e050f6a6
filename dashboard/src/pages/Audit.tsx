import { Fragment, useMemo, useState, type FormEvent } from 'react';
import { api, describeError } from '../api/client';
import type { AuditEvent, AuditEventList, Chain, Decision, DecisionList, RuntimeList } from '../api/types';
import { ChainDot, ErrorBox, Link, Loading, PageHeader, TableWrap } from '../components';
import { navigate, useLiveEvent, useLoad, useLocation, useResync } from '../hooks';
import { entryChain, markers } from '../lib/chain';
import { download, toCsv } from '../lib/csv';
import { DECISION_FIELDS, field } from '../lib/entry';
import { isoToLocalInput, localInputToIso, shortHash, shortId, timeText } from '../lib/format';
import { pathOf, readFilters } from '../lib/router';

const DECISION_FILTERS = ['runtime_id', 'session_id', 'agent_id', 'action', 'risk', 'from', 'to'] as const;
const AUDIT_FILTERS = ['runtime_id', 'event_type', 'from', 'to'] as const;
const ACTIONS = ['auto_reply', 'require_human', 'deny', 'notify_only'];
const RISKS = ['none', 'low', 'medium', 'high', 'critical'];
const PAGE = 100;
/** The most rows an export reads (50 pages of 500). */
const EXPORT_MAX = 25_000;

type Stream = 'decisions' | 'audit';
type Row = Decision | AuditEvent;

function chainsOf(list: RuntimeList, stream: 'trace' | 'audit'): Map<string, Chain> {
  const out = new Map<string, Chain>();
  for (const r of list.runtimes) {
    const chain = r.chains.find((c) => c.stream === stream);
    if (chain) out.set(r.runtime_id, chain);
  }
  return out;
}

/** Whether a live decision belongs to the current search (so the "new" bar counts it). */
function matches(filters: Record<string, string>, d: { runtime_id: string; session_id: string | null; agent_id: string | null; action: string | null; risk: string | null; occurred_at: string }): boolean {
  if (filters.runtime_id && filters.runtime_id !== d.runtime_id) return false;
  if (filters.session_id && filters.session_id !== d.session_id) return false;
  if (filters.agent_id && filters.agent_id !== d.agent_id) return false;
  if (filters.action && !filters.action.split(',').includes(d.action ?? '')) return false;
  if (filters.risk && !filters.risk.split(',').includes(d.risk ?? '')) return false;
  if (filters.to && Date.parse(d.occurred_at) >= Date.parse(filters.to)) return false;
  return true;
}

export function Audit() {
  const { search } = useLocation();
  const stream: Stream = new URLSearchParams(search).get('stream') === 'audit' ? 'audit' : 'decisions';
  const keys = stream === 'audit' ? AUDIT_FILTERS : DECISION_FILTERS;
  const filters = useMemo(() => readFilters(search, keys), [search, keys]);
  const path = stream === 'audit' ? '/v1/audit-events' : '/v1/decisions';

  const [more, setMore] = useState<Row[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [fresh, setFresh] = useState(0);
  const [exportError, setExportError] = useState<string | null>(null);
  const [exportNote, setExportNote] = useState<string | null>(null);
  const [exporting, setExporting] = useState(false);

  const rows = useLoad(async () => {
    const page = await api.get<DecisionList & AuditEventList>(path, { ...filters, limit: PAGE });
    setMore([]);
    setCursor(page.next_cursor ?? null);
    setFresh(0);
    return (stream === 'audit' ? page.events : page.decisions) as Row[];
  }, [search]);
  const runtimes = useLoad(() => api.get<RuntimeList>('/v1/runtimes', { limit: 500 }), []);
  const chains = useMemo(() => (runtimes.data ? chainsOf(runtimes.data, stream === 'audit' ? 'audit' : 'trace') : new Map<string, Chain>()), [runtimes.data, stream]);

  useLiveEvent((e) => {
    if (e.kind === 'decision' && stream === 'decisions' && matches(filters, e.payload)) setFresh((n) => n + 1);
    if (e.kind === 'chain_status') runtimes.reload();
  });
  useResync(() => {
    runtimes.reload();
    rows.reload();
  });

  // Rows are shown once their runtimes' chains are known too, so that indicators and markers
  // arrive with them instead of moving the rows a moment later.
  const ready = rows.data !== null && (runtimes.data !== null || runtimes.error !== null);
  const all = ready ? [...(rows.data ?? []), ...more] : [];
  const marks = markers(all, chains);

  const loadMore = async () => {
    if (!cursor) return;
    const page = await api.get<DecisionList & AuditEventList>(path, { ...filters, limit: PAGE, cursor });
    setMore((m) => [...m, ...((stream === 'audit' ? page.events : page.decisions) as Row[])]);
    setCursor(page.next_cursor ?? null);
  };

  const showFresh = () => {
    runtimes.reload();
    rows.reload();
  };

  const submit = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const params = new URLSearchParams();
    if (stream === 'audit') params.set('stream', 'audit');
    for (const key of keys) {
      let value: string;
      if (key === 'action' || key === 'risk') value = form.getAll(key).map(String).join(',');
      else value = String(form.get(key) ?? '').trim();
      if (key === 'from' || key === 'to') value = localInputToIso(value);
      if (value) params.set(key, value);
    }
    navigate(`/audit${params.toString() ? '?' + params.toString() : ''}`);
  };

  const exportAs = async (format: 'csv' | 'json') => {
    setExporting(true);
    setExportError(null);
    setExportNote(null);
    try {
      const out: Row[] = [];
      let next: string | null | undefined;
      do {
        const page: DecisionList & AuditEventList = await api.get(path, { ...filters, limit: 500, cursor: next });
        out.push(...((stream === 'audit' ? page.events : page.decisions) as Row[]));
        next = page.next_cursor;
      } while (next && out.length < EXPORT_MAX);
      setExportNote(
        next
          ? `Exported the newest ${out.length.toLocaleString('en')} rows only (the limit of one export): narrow the search for the rest.`
          : `Exported ${out.length.toLocaleString('en')} row${out.length === 1 ? '' : 's'}.`,
      );
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      const name = `atlasbridge-${stream}-${stamp}.${format}`;
      if (format === 'json') {
        download(name, 'application/json', JSON.stringify({ filters, truncated: Boolean(next), [stream === 'audit' ? 'events' : 'decisions']: out }, null, 2));
      } else {
        const flat = out.map((r) => {
          const base: Record<string, unknown> = {
            runtime_id: r.runtime_id,
            seq: r.seq,
            entry_id: r.entry_id,
            occurred_at: r.occurred_at,
            hash_ok: r.hash_ok,
            chain: entryChain(r.seq, r.hash_ok, chains.get(r.runtime_id)),
          };
          if ('event_type' in r) base.event_type = r.event_type;
          else {
            base.session_id = r.session_id;
            base.agent_id = r.agent_id;
            base.action = r.action;
            base.risk = r.risk;
            for (const f of DECISION_FIELDS) base[f] = field(r.entry, f);
          }
          return base;
        });
        const columns = stream === 'audit'
          ? ['runtime_id', 'seq', 'entry_id', 'occurred_at', 'event_type', 'hash_ok', 'chain']
          : ['runtime_id', 'seq', 'entry_id', 'occurred_at', 'session_id', 'agent_id', 'action', 'risk', 'hash_ok', 'chain', ...DECISION_FIELDS];
        download(name, 'text/csv', toCsv(columns, flat));
      }
    } catch (e) {
      setExportError(describeError(e));
    } finally {
      setExporting(false);
    }
  };

  const selected = (key: string, value: string) => (filters[key] ?? '').split(',').includes(value);

  return (
    <section aria-labelledby="page-title">
      <PageHeader title="Audit trail">
        <button type="button" onClick={() => exportAs('csv')} disabled={exporting}>
          Export CSV
        </button>
        <button type="button" onClick={() => exportAs('json')} disabled={exporting}>
          Export JSON
        </button>
      </PageHeader>
      <div className="tabs" role="group" aria-label="Stream">
        <Link to="/audit" className={stream === 'decisions' ? 'tab active' : 'tab'} aria-current={stream === 'decisions' ? 'page' : undefined}>
          Decisions (trace)
        </Link>
        <Link to="/audit?stream=audit" className={stream === 'audit' ? 'tab active' : 'tab'} aria-current={stream === 'audit' ? 'page' : undefined}>
          Runtime audit events
        </Link>
      </div>
      <form className="filters" onSubmit={submit} aria-label="Search the audit trail" key={search}>
        <label>
          Runtime
          <input name="runtime_id" defaultValue={filters.runtime_id ?? ''} placeholder="ed25519:…" />
        </label>
        {stream === 'decisions' ? (
          <>
            <label>
              Session
              <input name="session_id" defaultValue={filters.session_id ?? ''} />
            </label>
            <label>
              Agent
              <input name="agent_id" defaultValue={filters.agent_id ?? ''} />
            </label>
            <fieldset>
              <legend>Action</legend>
              {ACTIONS.map((a) => (
                <label key={a} className="check">
                  <input type="checkbox" name="action" value={a} defaultChecked={selected('action', a)} /> {a}
                </label>
              ))}
            </fieldset>
            <fieldset>
              <legend>Risk</legend>
              {RISKS.map((r) => (
                <label key={r} className="check">
                  <input type="checkbox" name="risk" value={r} defaultChecked={selected('risk', r)} /> {r}
                </label>
              ))}
            </fieldset>
          </>
        ) : (
          <label>
            Event types (comma-separated)
            <input name="event_type" defaultValue={filters.event_type ?? ''} placeholder="cloud_policy_applied, …" />
          </label>
        )}
        <label>
          From (UTC)
          <input name="from" type="datetime-local" defaultValue={filters.from ? isoToLocalInput(filters.from) : ''} />
        </label>
        <label>
          To (UTC)
          <input name="to" type="datetime-local" defaultValue={filters.to ? isoToLocalInput(filters.to) : ''} />
        </label>
        <button type="submit" className="primary">
          Search
        </button>
      </form>
      <ErrorBox error={exportError} />
      <div aria-live="polite">{exportNote ? <p className="notice">{exportNote}</p> : null}</div>
      <div className="update-bar" aria-live="polite">
        {fresh > 0 ? (
          <button type="button" onClick={showFresh} id="show-new">
            {fresh} new decision{fresh === 1 ? '' : 's'}: show
          </button>
        ) : null}
      </div>
      <ErrorBox error={rows.error} />
      <ErrorBox error={runtimes.error} />
      {!ready && !rows.error ? <Loading what="entries" /> : null}
      {ready && all.length === 0 ? <p className="muted">Nothing matches.</p> : null}
      {all.length > 0 ? (
        <TableWrap label="Entries">
          <table className="table" id="audit-table" aria-busy={rows.loading}>
            <thead>
              <tr>
                <th scope="col">
Chain
                </th>
                <th scope="col">Time (UTC)</th>
                <th scope="col">Runtime · seq</th>
                {stream === 'decisions' ? (
                  <>
                    <th scope="col">Session</th>
                    <th scope="col">Action</th>
                    <th scope="col">Risk</th>
                    <th scope="col">Policy</th>
                  </>
                ) : (
                  <th scope="col">Event</th>
                )}
              </tr>
            </thead>
            <tbody>
              {all.map((r, i) => {
                const state = entryChain(r.seq, r.hash_ok, chains.get(r.runtime_id));
                const mark = marks.filter((m) => m.beforeIndex === i);
                return (
                  <Fragment key={r.runtime_id + '/' + r.seq}>
                    {mark.map((m) => (
                      <tr key={m.kind + m.runtimeId} className={`marker marker-${m.kind}`} data-marker={m.kind}>
                        <td colSpan={stream === 'decisions' ? 7 : 4}>{m.text}</td>
                      </tr>
                    ))}
                    <tr data-entry={r.entry_id} data-seq={r.seq} data-chain={state} data-action={'action' in r ? (r.action ?? '') : ''}>
                      <td>
                        <ChainDot state={state} />
                      </td>
                      <td className="nowrap">{timeText(r.occurred_at)}</td>
                      <td className="nowrap">
                        <Link to={pathOf({ name: 'runtime', runtimeId: r.runtime_id })} title={r.runtime_id}>
                          <code>{shortId(r.runtime_id, 8)}</code>
                        </Link>{' '}
                        #{r.seq}
                      </td>
                      {'event_type' in r ? (
                        <td>{r.event_type ?? '—'}</td>
                      ) : (
                        <>
                          <td>
                            {r.session_id ? <Link to={pathOf({ name: 'session', runtimeId: r.runtime_id, sessionId: r.session_id })}>{r.session_id}</Link> : '—'}
                          </td>
                          <td>
                            <span className={`action action-${r.action ?? 'none'}`}>{r.action ?? '—'}</span>
                          </td>
                          <td>{r.risk ?? '—'}</td>
                          <td>
                            {field(r.entry, 'policy_name') || field(r.entry, 'policy_hash') ? (
                              <>
                                {field(r.entry, 'policy_name')} <code data-policy-hash={field(r.entry, 'policy_hash')}>{shortHash(field(r.entry, 'policy_hash'))}</code>
                              </>
                            ) : (
                              '—'
                            )}
                            {field(r.entry, 'matched_rule') ? <span className="muted"> · {field(r.entry, 'matched_rule')}</span> : null}
                          </td>
                        </>
                      )}
                    </tr>
                  </Fragment>
                );
              })}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      {cursor ? (
        <button type="button" onClick={loadMore}>
          Load more
        </button>
      ) : null}
    </section>
  );
}
