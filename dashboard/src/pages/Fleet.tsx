import { Fragment, useEffect, useRef, useState } from 'react';
import { api } from '../api/client';
import type { AuditEventList, DecisionEvent, RuntimeList, SessionList, Session } from '../api/types';
import { fleetEvent, fromAudit, type FleetEvent } from '../lib/events';
import { Badge, ChainSummary, ErrorBox, Link, Loading, PageHeader, TableWrap, statusTone } from '../components';
import { useLiveEvent, useLoad, useNow, useResync } from '../hooks';
import { ago, shortId, timeText } from '../lib/format';
import { addDecision, pushRecent, rateText, statsFromSessions, utcMidnight, type DayStats } from '../lib/stats';
import { pathOf } from '../lib/router';

/** How many recent events the overview shows: a fixed number of fixed-height slots, so a new
 *  event changes the slots' text and moves nothing on the page. */
const RECENT_SLOTS = 8;
/** Sessions read for the day's figures (5 pages of 500); beyond that the figures say so. */
const MAX_SESSION_PAGES = 5;

async function loadDay(): Promise<{ stats: DayStats; sessions: Set<string> }> {
  const since = utcMidnight(new Date());
  const all: Session[] = [];
  let cursor: string | null | undefined;
  let pages = 0;
  do {
    const page: SessionList = await api.get<SessionList>('/v1/sessions', { from: since.toISOString(), limit: 500, cursor });
    all.push(...page.sessions);
    cursor = page.next_cursor;
    pages += 1;
  } while (cursor && pages < MAX_SESSION_PAGES);
  return { stats: statsFromSessions(since, all, !cursor), sessions: new Set(all.map((s) => sessionKey(s.runtime_id, s.session_id))) };
}

const sessionKey = (runtimeId: string, sessionId: string | null) => `${runtimeId}/${sessionId ?? ''}`;
/** Fleet events shown: runtimes' own audit events from REST, then live changes in front. */
const EVENT_SLOTS = 6;

export function Fleet() {
  const now = useNow();
  const runtimes = useLoad(() => api.get<RuntimeList>('/v1/runtimes', { limit: 500 }), []);
  const day = useLoad(loadDay, []);
  const [recent, setRecent] = useState<DecisionEvent[]>([]);
  const [events, setEvents] = useState<FleetEvent[]>([]);
  const pushEvent = (e: FleetEvent | null) => {
    if (e) setEvents((old) => [e, ...old.filter((x) => x.key !== e.key)].slice(0, EVENT_SLOTS));
  };
  useEffect(() => {
    api.get<AuditEventList>('/v1/audit-events', { limit: EVENT_SLOTS }).then(
      (page) => setEvents((old) => (old.length ? old : page.events.map(fromAudit))),
      () => {},
    );
  }, []);
  const reloadTimer = useRef<ReturnType<typeof setTimeout> | null>(null);

  // The newest events from REST, on first load and after the stream may have missed some;
  // live ones are added in front.
  const loadRecent = (replace: boolean) =>
    api.get<{ decisions: DecisionEvent[] }>('/v1/decisions', { limit: RECENT_SLOTS }).then(
      (page) => setRecent((old) => (old.length && !replace ? old : page.decisions)),
      () => {},
    );
  useEffect(() => {
    void loadRecent(false);
  }, []);

  const reloadRuntimesSoon = () => {
    if (reloadTimer.current) return;
    reloadTimer.current = setTimeout(() => {
      reloadTimer.current = null;
      runtimes.reload();
    }, 300);
  };
  useEffect(() => () => {
    if (reloadTimer.current) clearTimeout(reloadTimer.current);
  }, []);

  useLiveEvent((event) => {
    if (event.kind === 'decision') {
      const d = event.payload;
      setRecent((old) => pushRecent(old, d, RECENT_SLOTS));
      day.set((old) => {
        if (!old || Date.parse(d.occurred_at) < Date.parse(old.stats.since)) return old;
        const key = sessionKey(d.runtime_id, d.session_id);
        const sessions = old.sessions.has(key) ? old.sessions : new Set([...old.sessions, key]);
        return { stats: addDecision(old.stats, d), sessions };
      });
      // A runtime not listed yet, or last seen long ago: its row changes.
      if (!runtimes.data?.runtimes.some((r) => r.runtime_id === d.runtime_id)) reloadRuntimesSoon();
    } else if (event.kind === 'runtime_status' || event.kind === 'chain_status') {
      reloadRuntimesSoon();
      pushEvent(fleetEvent(event, new Date().toISOString()));
    } else {
      pushEvent(fleetEvent(event, new Date().toISOString()));
    }
  });
  useResync(() => {
    runtimes.reload();
    day.reload();
    void loadRecent(true);
  });

  const list = runtimes.data?.runtimes ?? [];
  const active = list.filter((r) => r.status === 'active').length;
  const stats = day.data?.stats;

  return (
    <section aria-labelledby="page-title">
      <PageHeader title="Fleet" />
      <dl className="figures">
        <div className="figure">
          <dt>Active runtimes</dt>
          <dd data-figure="active-runtimes">{runtimes.data ? `${active} / ${list.length}` : '…'}</dd>
        </div>
        <div className="figure">
          <dt>Sessions today</dt>
          <dd data-figure="sessions-today">{day.data ? day.data.sessions.size : '…'}</dd>
        </div>
        <div className="figure">
          <dt>Decisions today</dt>
          <dd data-figure="decisions-today">{stats ? stats.decisions : '…'}</dd>
        </div>
        <div className="figure">
          <dt>Escalation rate</dt>
          <dd data-figure="escalation-rate" title="Decisions that asked a person (require_human) today">
            {stats ? rateText(stats) : '…'}
          </dd>
        </div>
      </dl>
      {stats && !stats.complete ? <p className="muted">Figures count the first {MAX_SESSION_PAGES * 500} sessions of the day.</p> : null}
      <ErrorBox error={day.error} />

      <div className="two-columns">
        <div>
          <h2>Runtimes</h2>
          <ErrorBox error={runtimes.error} />
          {runtimes.loading && !runtimes.data ? <Loading what="runtimes" /> : null}
          {runtimes.data && list.length === 0 ? (
            <p className="muted">No runtime has connected yet. Point a daemon's `[cloud]` section at this server.</p>
          ) : null}
          {list.length > 0 ? (
            <TableWrap label="Runtimes">
              <table className="table" id="runtimes-table">
                <thead>
                  <tr>
                    <th scope="col">Runtime</th>
                    <th scope="col">Status</th>
                    <th scope="col">Witness</th>
                    <th scope="col">Trace chain</th>
                    <th scope="col">Last seen</th>
                    <th scope="col">Version</th>
                  </tr>
                </thead>
                <tbody>
                  {list.map((r) => (
                    <tr key={r.runtime_id} data-runtime={r.runtime_id}>
                      <td>
                        <Link to={pathOf({ name: 'runtime', runtimeId: r.runtime_id })} title={r.runtime_id}>
                          <code>{shortId(r.runtime_id)}</code>
                        </Link>
                      </td>
                      <td>
                        <Badge tone={statusTone(r.status)}>{r.status}</Badge>
                      </td>
                      <td>
                        <Badge tone={statusTone(r.witness_status)}>{r.witness_status}</Badge>
                        {r.flag_count > 0 ? <span className="muted"> {r.flag_count} flags</span> : null}
                      </td>
                      <td>
                        <ChainSummary chain={r.chains.find((c) => c.stream === 'trace')} />
                      </td>
                      <td className="ago" title={timeText(r.last_seen)}>{ago(r.last_seen, now)}</td>
                      <td>
                        {r.agent_version} <span className="muted">{r.edition}</span>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </TableWrap>
          ) : null}
        </div>
        <div>
          <h2 id="recent-title">Last decisions</h2>
          <ol className="recent" aria-labelledby="recent-title" aria-live="polite" id="recent-decisions">
            {Array.from({ length: RECENT_SLOTS }, (_, i) => {
              const d = recent[i];
              return (
                <li key={i} className="recent-slot" data-slot={i} data-session={d?.session_id ?? ''} data-action={d?.action ?? ''}>
                  {d ? (
                    // Keyed by the event: a slot gets new nodes for a new event rather than
                    // re-flowed old ones, and its fixed box keeps everything else in place.
                    <Fragment key={`${d.runtime_id}/${d.seq}`}>
                      <span>
                        <span className={`action action-${d.action ?? 'none'}`}>{d.action ?? '—'}</span>
                      </span>
                      <span className="recent-what">
                        {d.session_id ? (
                          <Link to={pathOf({ name: 'session', runtimeId: d.runtime_id, sessionId: d.session_id })}>{d.session_id}</Link>
                        ) : (
                          '—'
                        )}{' '}
                        <span className="muted">
                          risk {d.risk ?? '—'} · <code>{shortId(d.runtime_id, 6)}</code>#{d.seq}
                        </span>
                      </span>
                      <span className="recent-when muted">{ago(d.occurred_at, now)}</span>
                    </Fragment>
                  ) : (
                    <span className="muted">—</span>
                  )}
                </li>
              );
            })}
          </ol>
          <h2 id="events-title">Last fleet events</h2>
          <ol className="recent" aria-labelledby="events-title" aria-live="polite" id="fleet-events">
            {Array.from({ length: EVENT_SLOTS }, (_, i) => {
              const e = events[i];
              return (
                <li key={i} className="recent-slot" data-slot={i} data-kind={e?.kind ?? ''} data-runtime={e?.runtimeId ?? ''}>
                  {e ? (
                    <Fragment key={e.key}>
                      <span>
                        <span className={`badge badge-${e.tone}`}>{e.label}</span>
                      </span>
                      <span className="recent-what">
                        {e.text}{' '}
                        {e.runtimeId ? (
                          <Link to={pathOf({ name: 'runtime', runtimeId: e.runtimeId })} title={e.runtimeId}>
                            <code>{shortId(e.runtimeId, 6)}</code>
                          </Link>
                        ) : null}
                      </span>
                      <span className="recent-when muted">{ago(e.at, now)}</span>
                    </Fragment>
                  ) : (
                    <span className="muted">—</span>
                  )}
                </li>
              );
            })}
          </ol>
        </div>
      </div>
    </section>
  );
}
