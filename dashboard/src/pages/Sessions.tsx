import { useState, type FormEvent } from 'react';
import { api } from '../api/client';
import type { DecisionList, Session, SessionList } from '../api/types';
import { Badge, ErrorBox, Link, Loading, PageHeader, TableWrap } from '../components';
import { navigate, useLiveEvent, useLoad, useLocation, useNow, useResync } from '../hooks';
import { field } from '../lib/entry';
import { ago, isoToLocalInput, localInputToIso, shortHash, shortId, timeText } from '../lib/format';
import { pathOf, readFilters } from '../lib/router';

const SESSION_FILTERS = ['runtime_id', 'agent_id', 'from', 'to'] as const;

function counts(map: Record<string, number>): string {
  return Object.entries(map)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k || 'unclassified'}`)
    .join(', ');
}

export function Sessions() {
  const { search } = useLocation();
  const filters = readFilters(search, SESSION_FILTERS);
  const now = useNow();
  const [more, setMore] = useState<Session[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const list = useLoad(async () => {
    const page = await api.get<SessionList>('/v1/sessions', { ...filters, limit: 100 });
    setMore([]);
    setCursor(page.next_cursor ?? null);
    return page.sessions;
  }, [search]);
  useResync(() => list.reload());
  // A decision changes its session's counts: reload, at most every few seconds.
  const [stale, setStale] = useState(false);
  useLiveEvent((e) => {
    if (e.kind === 'decision') setStale(true);
  });

  const loadMore = async () => {
    if (!cursor) return;
    const page = await api.get<SessionList>('/v1/sessions', { ...filters, limit: 100, cursor });
    setMore((m) => [...m, ...page.sessions]);
    setCursor(page.next_cursor ?? null);
  };

  const submit = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const params = new URLSearchParams();
    for (const key of SESSION_FILTERS) {
      let value = String(form.get(key) ?? '').trim();
      if (key === 'from' || key === 'to') value = localInputToIso(value);
      if (value) params.set(key, value);
    }
    navigate(`/sessions${params.toString() ? '?' + params.toString() : ''}`);
  };

  const rows = [...(list.data ?? []), ...more];
  return (
    <section aria-labelledby="page-title">
      <PageHeader title="Sessions" />
      <form className="filters" onSubmit={submit} aria-label="Filter sessions">
        <label>
          Runtime
          <input name="runtime_id" defaultValue={filters.runtime_id ?? ''} placeholder="ed25519:…" />
        </label>
        <label>
          Agent
          <input name="agent_id" defaultValue={filters.agent_id ?? ''} />
        </label>
        <label>
          From (UTC)
          <input name="from" type="datetime-local" defaultValue={filters.from ? isoToLocalInput(filters.from) : ''} />
        </label>
        <label>
          To (UTC)
          <input name="to" type="datetime-local" defaultValue={filters.to ? isoToLocalInput(filters.to) : ''} />
        </label>
        <button type="submit">Search</button>
      </form>
      <div className="update-bar">
        {stale ? (
          <button
            type="button"
            onClick={() => {
              setStale(false);
              list.reload();
            }}
          >
            New decisions arrived: refresh
          </button>
        ) : null}
      </div>
      <ErrorBox error={list.error} />
      {list.loading && !list.data ? <Loading what="sessions" /> : null}
      {list.data && rows.length === 0 ? <p className="muted">No sessions match.</p> : null}
      {rows.length > 0 ? (
        <TableWrap label="Sessions">
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Session</th>
                <th scope="col">Runtime</th>
                <th scope="col">Agent</th>
                <th scope="col">Decisions</th>
                <th scope="col">Actions</th>
                <th scope="col">Risk</th>
                <th scope="col">Last</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((s) => (
                <tr key={s.runtime_id + '/' + s.session_id}>
                  <td>
                    <Link to={pathOf({ name: 'session', runtimeId: s.runtime_id, sessionId: s.session_id })}>{s.session_id}</Link>
                  </td>
                  <td>
                    <code title={s.runtime_id}>{shortId(s.runtime_id)}</code>
                  </td>
                  <td>{s.agent_id ?? '—'}</td>
                  <td className="num">{s.decisions}</td>
                  <td>{counts(s.actions)}</td>
                  <td>{counts(s.risks)}</td>
                  <td className="ago" title={timeText(s.last_at)}>{ago(s.last_at, now)}</td>
                </tr>
              ))}
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

export function SessionTimeline({ runtimeId, sessionId }: { runtimeId: string; sessionId: string }) {
  const timeline = useLoad(async () => {
    const out: DecisionList['decisions'] = [];
    let cursor: string | null | undefined;
    let pages = 0;
    do {
      const page: DecisionList = await api.get<DecisionList>('/v1/decisions', { runtime_id: runtimeId, session_id: sessionId, limit: 500, cursor });
      out.push(...page.decisions);
      cursor = page.next_cursor;
      pages += 1;
    } while (cursor && pages < 10);
    return { decisions: out.reverse(), truncated: Boolean(cursor) };
  }, [runtimeId, sessionId]);
  useLiveEvent((e) => {
    if (e.kind === 'decision' && e.payload.runtime_id === runtimeId && e.payload.session_id === sessionId) timeline.reload();
  });
  useResync(() => timeline.reload());

  const data = timeline.data;
  return (
    <section aria-labelledby="page-title">
      <PageHeader title={`Session ${sessionId}`}>
        <Link to={`/audit?runtime_id=${encodeURIComponent(runtimeId)}&session_id=${encodeURIComponent(sessionId)}`} className="button">
          In the audit trail
        </Link>
      </PageHeader>
      <p>
        Runtime <Link to={pathOf({ name: 'runtime', runtimeId })}>{<code>{shortId(runtimeId, 20)}</code>}</Link>. Decisions oldest first; what was
        asked stays on the runtime (prompt text never reaches the server).
      </p>
      <ErrorBox error={timeline.error} />
      {timeline.loading && !data ? <Loading what="the timeline" /> : null}
      {data?.truncated ? <p className="muted">Showing the newest 5,000 decisions.</p> : null}
      {data ? (
        <ol className="timeline" id="session-timeline">
          {data.decisions.map((d) => (
            <li key={d.seq} className="timeline-item">
              <div className="timeline-when">{timeText(d.occurred_at)}</div>
              <div className="timeline-body">
                <span className={`action action-${d.action ?? 'none'}`}>{d.action ?? '—'}</span>{' '}
                <Badge tone={d.risk === 'high' || d.risk === 'critical' ? 'bad' : d.risk === 'medium' ? 'warn' : 'neutral'}>risk {d.risk ?? '—'}</Badge>{' '}
                <span className="muted">
                  seq {d.seq} · {field(d.entry, 'prompt_type')} · rule {field(d.entry, 'matched_rule') || '(default)'} · policy{' '}
                  {field(d.entry, 'policy_name')} <code>{shortHash(field(d.entry, 'policy_hash'))}</code>
                </span>
              </div>
            </li>
          ))}
        </ol>
      ) : null}
    </section>
  );
}
